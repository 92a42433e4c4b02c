"""Weather agent: fetch (simulated) weather for a city, then write advice about it.

    SERVING_PIPELINE=examples/weather.py:weather_agent python -m serving
    curl -s localhost:8000/invoke -H 'content-type: application/json' \
         -d '{"parameters": {"city": "Rome"}}'

The data is made up deterministically from the city name, so the example runs offline.
"""

import hashlib
from typing import Annotated

from serving import pipeline, step


@step(retries=2, retry_delay=0.1)
def get_weather(city: str) -> Annotated[dict[str, float | str], "weather"]:
    """Stands in for a call to a weather API (hence the retries)."""
    seed = int(hashlib.sha256(city.lower().encode()).hexdigest(), 16)
    return {
        "city": city,
        "temperature_c": round(-5 + (seed % 400) / 10, 1),
        "humidity": (seed >> 12) % 100,
        "wind_kmh": (seed >> 24) % 60,
    }


@step
def analyze_weather(weather: dict[str, float | str]) -> Annotated[str, "advice"]:
    temp = float(weather["temperature_c"])
    wind = float(weather["wind_kmh"])
    if temp < 5:
        advice = "Cold: wear a warm coat."
    elif temp > 28:
        advice = "Hot: stay hydrated and find shade."
    else:
        advice = "Mild: a light jacket is enough."
    if wind > 40:
        advice += " Strong wind, hold on to your hat."
    return f"{weather['city']}: {temp:.1f}°C, humidity {weather['humidity']}%. {advice}"


@pipeline
def weather_agent(city: str = "London"):
    weather = get_weather(city)
    return weather, analyze_weather(weather)
