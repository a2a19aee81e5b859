"""The admin API's schema says what its services refuse: a blank rebuild reason or actor is a schema error."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from billing_api.schemas import RebuildAllRequest, RebuildRequest


@pytest.mark.parametrize("body", [{"reason": "   "}, {"reason": ""}, {"reason": "INC-1", "actor": ""},
                                  {"reason": "INC-1", "actor": " \t"}])
def test_a_blank_reason_or_actor_is_refused_by_the_schema(body: dict[str, str]) -> None:
    for model in (RebuildRequest, RebuildAllRequest):
        with pytest.raises(ValidationError):
            model.model_validate(body)


def test_the_published_schema_carries_the_bounds() -> None:
    properties = RebuildRequest.model_json_schema()["properties"]
    assert properties["reason"]["pattern"] == r"\S"
    assert properties["actor"]["pattern"] == r"\S"  # beside anyOf: a pattern binds strings only, null stays valid
    assert RebuildRequest.model_validate({"reason": "INC-1", "actor": "ana"}).actor == "ana"
