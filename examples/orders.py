"""A structured parameter: the request carries an order object, validated field by field.

    SERVING_PIPELINE=examples/orders.py:price_order python -m serving
    curl -s localhost:8000/invoke -H 'content-type: application/json' \
         -d '{"parameters": {"order": {"sku": "A-1", "qty": 3, "unit_price": 2.5}}}'

`{"qty": "three"}` is refused with 422 and `parameters.order.qty: Expected int, got str`.
"""

from enum import StrEnum
from typing import Annotated

import msgspec

from serving import pipeline, step


class Currency(StrEnum):
    EUR = "EUR"
    USD = "USD"


class Order(msgspec.Struct, frozen=True):
    sku: str
    qty: Annotated[int, msgspec.Meta(ge=1)]
    unit_price: Annotated[float, msgspec.Meta(ge=0)]
    currency: Currency = Currency.EUR


@step
def subtotal(order: Order) -> Annotated[float, "subtotal"]:
    return round(order.qty * order.unit_price, 2)


@step
def with_tax(amount: float, rate: float) -> tuple[Annotated[float, "tax"], Annotated[float, "total"]]:
    tax = round(amount * rate, 2)
    return tax, round(amount + tax, 2)


@pipeline
def price_order(order: Order = Order(sku="DEMO", qty=1, unit_price=1.0), tax_rate: float = 0.2):
    amount = subtotal(order)
    tax, total = with_tax(amount, tax_rate)
    return amount, tax, total
