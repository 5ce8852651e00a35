"""The published OpenAPI document (GET /openapi.json, in process): the bounds it shows, its examples, and an
error response per status that lists that status's codes with a body as the server sends it."""

import re
from pathlib import Path

import jsonschema
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.api.deps import get_settings, get_store, require_token
from app.api.errors import ERROR_SCHEMA
from app.aws.runner import classify
from app.budget.deps import get_account_plan, get_spending
from app.config import Settings
from app.core.errors import Unauthorized
from app.instances import free_tier
from app.instances import schemas as models
from app.instances.deps import get_reconciler, get_service
from app.main import create_app
from app.store import Database

ROOT = Path(__file__).resolve().parents[2]
UNTRACKED = "i-0123456789abcdef0"


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(_env_file=None, ec2_endpoint_url="http://127.0.0.1:9", aws_access_key_id="testing",  # type: ignore[call-arg]
                    database_url=str(tmp_path / "instances.db"))


@pytest.fixture
def client(settings):
    store = Database(settings.database_path)
    store.migrate()  # empty: every id is untracked
    app = create_app(lambda: settings)
    app.dependency_overrides |= {get_settings: lambda: settings, get_store: lambda: store,
                                 get_service: lambda: None, get_reconciler: lambda: None,
                                 get_spending: lambda: None, get_account_plan: lambda: None}
    return TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)


@pytest.fixture
def spec(client) -> dict:
    return client.get("/openapi.json").json()


def create_properties(spec: dict) -> dict:
    return spec["components"]["schemas"]["InstanceCreate"]["properties"]


def test_storage_gb_shows_the_free_tier_bounds(spec):
    storage = create_properties(spec)["storage_gb"]
    assert (storage["minimum"], storage["maximum"]) == (free_tier.MIN_STORAGE_GB, free_tier.MAX_STORAGE_GB) == (8, 30)
    assert (models.MIN_STORAGE_GB, models.MAX_STORAGE_GB) == (free_tier.MIN_STORAGE_GB, free_tier.MAX_STORAGE_GB)
    assert storage["default"] == 8 and "storage_not_free_tier" in storage["description"]


def test_outside_the_bounds_is_still_the_policys_400_that_says_why(client):
    # The schema bound is the policy's: the answer stays the free-tier 400 (test_api.py checks it end to end).
    with pytest.raises(free_tier.PolicyViolation) as refused:
        free_tier.check_static(["t3.micro"], "t3.micro", 31)
    assert refused.value.code == "storage_not_free_tier"
    too_big = client.post("/instances", json={"name": "x", "ami": "amazon-linux-2023", "instance_type": "t3.micro",
                                              "storage_gb": 2**31 + 1})
    assert too_big.status_code == 422  # no disk is that large: a schema error, before the policy


def test_try_it_out_creates_a_sensible_box_not_the_schemas_minimums(spec):
    body = spec["paths"]["/instances"]["post"]["requestBody"]["content"]["application/json"]
    example = next(iter(body["examples"].values()))["value"]  # Swagger UI fills "Try it out" with the first
    assert example == {"name": "my-box", "ami": "amazon-linux-2023", "instance_type": "t3.micro", "storage_gb": 8}
    create = models.InstanceCreate.model_validate(example)  # it passes validation as it is
    assert "auto_stop_minutes" not in create.model_fields_set  # omitted: the server's DEFAULT_AUTO_STOP_MINUTES
    assert create.stop_when_idle is None  # no idle alarm
    free_tier.check_static(["t3.micro"], create.instance_type, create.storage_gb)  # and the free-tier policy


def test_create_refuses_unknown_fields_in_the_schema_too(spec):
    assert spec["components"]["schemas"]["InstanceCreate"]["additionalProperties"] is False


def test_tags_examples_are_readable(spec):
    assert create_properties(spec)["tags"]["examples"] == [{"Owner": "me"}]
    patch = spec["components"]["schemas"]["InstancePatch"]["properties"]["tags"]
    assert patch["examples"] == [{"Owner": "me"}]


def error_responses(spec: dict):
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    yield f"{method.upper()} {path} {status}", int(status), response


def test_every_error_response_says_its_codes_and_shows_a_real_body(spec):
    seen = set()
    for where, status, response in error_responses(spec):
        seen.add(status)
        description = response["description"]
        assert description != "Error" and "Codes: `" in description, where
        codes = re.findall(r"`([a-z_]+)`", description.split("Codes:", 1)[1])
        content = response["content"]["application/json"]
        example = content["example"]
        jsonschema.validate(example, ERROR_SCHEMA)
        assert example["code"] in codes and example["detail"] and example["detail"] != "string", where
    assert seen >= {400, 401, 403, 404, 409, 422, 502, 503, 504}


def documented_codes(spec: dict) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for _, status, response in error_responses(spec):
        for code in re.findall(r"`([a-z_]+)`", response["description"].split("Codes:", 1)[1]):
            found.setdefault(code, set()).add(status)
    return found


def test_every_code_the_app_raises_is_documented(spec):
    source = "\n".join(path.read_text() for path in (ROOT / "app").rglob("*.py"))
    raised = set(re.findall(r'code="([a-z_]+)"', source))  # ApiError(..., code="...")
    raised |= set(re.findall(r'return \("([a-z_]+)", f?"', source))  # the guard's (code, detail) refusals
    raised |= {"aws_error", "aws_timeout", "validation_error", "invalid_body", "not_found", "forbidden"}
    assert len(raised) > 50
    assert sorted(raised - set(documented_codes(spec))) == []


def test_the_examples_are_what_the_server_answers(client, spec, settings):
    post = spec["paths"]["/instances"]["post"]["responses"]
    with pytest.raises(free_tier.PolicyViolation) as refused:
        free_tier.check_static(["t3.micro"], "t3.micro", 31)
    assert post["400"]["content"]["application/json"]["example"] == refused.value.body()
    answer = client.post("/instances", json={"name": "web$1", "ami": "amazon-linux-2023", "instance_type": "t3.micro"})
    assert post["422"]["content"]["application/json"]["example"] == answer.json()
    missing = client.get(f"/instances/{UNTRACKED}")
    assert spec["paths"]["/instances/{instance_id}"]["get"]["responses"]["404"]["content"]["application/json"][
        "example"] == missing.json()
    aws_refusals = {
        "502": classify("destroy_instance.sh", 254, "An error occurred (OperationNotPermitted) when calling the "
                        "TerminateInstances operation: The instance 'i-0123456789abcdef0' may not be terminated. "
                        "Modify its 'disableApiTermination' instance attribute and try again."),
        "503": classify("stop_instance.sh", 255, 'Could not connect to the endpoint URL: "http://127.0.0.1:9/"'),
    }
    stop = spec["paths"]["/instances/{instance_id}/stop"]["post"]["responses"]
    for status, error in aws_refusals.items():
        assert stop[status]["content"]["application/json"]["example"] == error.body()
    settings.api_token = SecretStr("a-token-of-sixteen-chars")
    with pytest.raises(Unauthorized) as unauthorized:
        require_token(settings, None)
    assert post["401"]["content"]["application/json"]["example"] == unauthorized.value.body()


def test_idempotency_key_retention_is_the_references_and_the_codes(spec):
    header = next(p for p in spec["paths"]["/instances"]["post"]["parameters"] if p["name"] == "Idempotency-Key")
    readme = (ROOT / "docs" / "REFERENCE.md").read_text()
    sentence = "Keys are kept for `EVENTS_RETENTION_DAYS` after their launch finished."
    assert sentence in readme
    assert sentence.replace("`", "").rstrip(".") in header["description"]
    assert "24 h" not in header["description"]
    # What the code does: prune() deletes finished launches older than EVENTS_RETENTION_DAYS.
    db_source = (ROOT / "app" / "store" / "events.py").read_text()
    assert "DELETE FROM launches WHERE status != 'pending' AND updated_at < :before" in db_source


def test_the_token_applies_only_when_one_is_set(spec):
    scheme = spec["components"]["securitySchemes"]["HTTPBearer"]
    assert scheme["description"].startswith("Needed only when the server has API_TOKEN or API_TOKENS_FILE set")
    assert "Tokens** apply only when the server has `API_TOKEN` or `API_TOKENS_FILE` set" in spec["info"][
        "description"]
    unauthorized = spec["paths"]["/instances"]["get"]["responses"]["401"]["description"]
    assert unauthorized.startswith("Only when the server has API_TOKEN or API_TOKENS_FILE set")
    assert "security" not in spec["paths"]["/health"]["get"]
