"""What replies cost (usage/): GET /api/usage."""

from __future__ import annotations

from .helpers import errors, obj, ok, query, ref


def schemas() -> dict:
    count = {"type": "integer", "minimum": 0}

    def tally(key: str | None = None, meaning: str = "") -> dict:
        numbers = {
            "replies": count,
            "prompt_tokens": count,
            "completion_tokens": count,
            "cost_usd": {"type": "number", "minimum": 0},
        }
        return obj({key: {"type": "string", "description": meaning}, **numbers} if key else numbers)

    return {
        "Usage": obj(
            {
                "from": {"type": "string", "format": "date"},
                "to": {"type": "string", "format": "date"},
                "user": {"type": "string", "description": "all, or the username whose usage this is."},
                "total": tally(),
                "by_day": {"type": "array", "items": tally("key", "The UTC day, YYYY-MM-DD.")},
                "by_agent": {"type": "array", "items": tally("key", "The agent id.")},
                "by_model": {"type": "array", "items": tally("key", "The model id.")},
                "by_user": {"type": "array", "items": tally("key", "The username (admins, everyone's usage).")},
            }
        ),
    }


def paths() -> dict:
    day = {"type": "string", "format": "date"}
    return {
        "/api/usage": {
            "get": {
                "summary": "What replies cost, by day (UTC), agent, model and (admins, everyone's) user.",
                "description": "Sums of each reply's usage; a reply that never reached its agent counts "
                "with zero tokens and $0. The same numbers as CSV rows at GET /usage.csv.",
                "parameters": [
                    query("from", "First UTC day, inclusive (default: 29 days before `to`).", day),
                    query("to", "Last UTC day, inclusive (default: today). At most 731 days in all.", day),
                    query("user", "Admins: a username, or all (the default). Others: only their own."),
                ],
                "responses": {"200": ok("The totals.", ref("Usage")), **errors(400, 401, 403)},
            }
        },
    }
