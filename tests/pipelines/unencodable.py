"""A step that returns an object JSON cannot encode."""

from serving import pipeline, step


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque>"


@step
def make_opaque(n: int):
    return Opaque()


@pipeline
def unencodable(n: int = 1):
    return make_opaque(n)
