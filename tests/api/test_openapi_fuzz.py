"""Property-based run over the OpenAPI schema (schemathesis): no request may produce a 5xx.

Schema-valid and schema-violating requests are generated for every operation. The
other default checks run too (response bodies, content types and status codes match
the schema, auth is not ignored), except two that judge the API's leniency rather
than its errors: "schema-valid data is accepted" (a schema cannot say that a job's
artifact ids must exist, so 422s there are right) and "schema-violating data is
rejected" (unknown query parameters are ignored, as HTTP APIs usually do).
Bounded to a few examples per operation so the module stays well under a minute.

The schema cannot describe hostile values (lone surrogates, control characters, huge
integers, deep nesting, NaN, containers where scalars belong, many tensors, internal
webhook addresses): a second test generates those and then walks every listing.
"""

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from tests.support.files import raw_safetensors
from tests.support.http import transfer_spec, upload

EXAMPLES_PER_OPERATION = 15


@pytest.fixture
def real_ids(api, tenant) -> dict[str, str]:
    """Existing ids for path parameters, so generated requests reach the code behind the 404s."""
    spec = transfer_spec(api, tenant)
    job = api.post("/v1/jobs", json={"spec": spec}, headers=tenant.headers).json()
    return {"artifact_id": spec["source"][1], "job_id": job["id"]}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_produces_a_server_error(api_app, tenant, real_ids, mode):
    schema = schemathesis.openapi.from_asgi("/openapi.json", api_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        params = {k: v for k, v in real_ids.items() if f"{{{k}}}" in operation.path}

        @given(case=operation.as_strategy(mode, path_parameters=params or None))
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {tenant.key}"},
                                   excluded_checks=[positive_data_acceptance, negative_data_rejection])

        try:
            call()
        except Unsatisfiable:
            # Nothing to get wrong (no parameters, path ids fixed above): no negative case exists.
            assert mode is GenerationMode.NEGATIVE


# Hostile values the schema cannot describe (issue 14): generators for the classes an attack
# corpus found 500s with, then every listing of the tenant must still answer 200.
HOSTILE_EXAMPLES = 40
surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3)
controls = st.text(st.characters(max_codepoint=0x1F) | st.characters(min_codepoint=0x7F, max_codepoint=0x9F),
                   min_size=1, max_size=3)
huge_ints = st.integers(min_value=2**63, max_value=10**400) | st.integers(max_value=-(2**63) - 1,
                                                                          min_value=-(10**400))
non_finite = st.sampled_from([float("nan"), float("inf"), float("-inf")])


def _nested(depth: int) -> object:
    value: object = []
    for _ in range(depth):
        value = [value] if depth % 2 else {"a": value}
    return value


deep = st.integers(min_value=33, max_value=400).map(_nested)
hostile_scalars = surrogates | controls | huge_ints | non_finite
# Containers where a scalar is expected: unhashable, so a `dict` lookup on them raises.
hostile_values = hostile_scalars | deep | st.lists(hostile_scalars, max_size=2) | st.dictionaries(
    st.text(max_size=3) | surrogates, hostile_scalars, max_size=2)
SPEC_PATHS = [("kind",), ("method",), ("arch", "name"), ("arch", "config"), ("arch", "config", "hidden"),
              ("arch", "config", "x"), ("source", 0), ("targets", 0, "seed"), ("train_data",),
              ("params", "steps"), ("params", "matching", "tol"), ("permutation_spec",), ("outputs", "trajectory")]


def _with(document: dict, path: tuple, value: object) -> dict:
    document = json.loads(json.dumps(document))
    target = document
    for key in path[:-1]:
        target = target.setdefault(key, {}) if isinstance(target, dict) else target[key]
    target[path[-1]] = value
    return document


def _header_entry(value: object, field: str) -> dict:
    return {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], field: value}


@pytest.fixture
def hostile_api(settings, tenant):
    from fastapi.testclient import TestClient

    from app.main import create_app

    # A small tensor cap, so "too many tensors" is reachable in a quick example.
    capped = settings.model_copy(update={"max_tensors_per_file": 50, "webhook_allow_private": False})
    with TestClient(create_app(capped), raise_server_exceptions=False) as client:
        yield client


def _listings_answer(api, tenant) -> None:
    """Every listing and every resource of the tenant, page by page, answers 200."""
    headers = tenant.headers
    for path, item in (("/v1/artifacts", "/v1/artifacts/{}"), ("/v1/jobs", "/v1/jobs/{}")):
        cursor = None
        while True:
            page = api.get(path, params={"limit": 200, **({"cursor": cursor} if cursor else {})}, headers=headers)
            assert page.status_code == 200, (path, page.text)
            for row in page.json()["data"]:
                for sub in ("", "/events" if "jobs" in path else "/tensors"):
                    response = api.get(item.format(row["id"]) + sub, headers=headers)
                    assert response.status_code == 200, (item, sub, response.text)
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break


def test_hostile_values_never_produce_a_server_error_nor_a_broken_listing(hostile_api, tenant):
    api = hostile_api
    spec = transfer_spec(api, tenant)
    post = {"headers": {**tenant.headers, "content-type": "application/json"}}

    @given(path=st.sampled_from(SPEC_PATHS), value=hostile_values,
           webhook=st.none() | st.sampled_from(["http://127.0.0.1/", "http://2130706433/", "http://u:p@example.com/",
                                                "http://[::1]/", "http://169.254.169.254/"]))
    @settings(max_examples=HOSTILE_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def submit(path, value, webhook):
        document = {"spec": _with(spec, path, value), **({"webhook": {"url": webhook}} if webhook else {})}
        response = api.post("/v1/jobs", content=json.dumps(document), **post)
        assert response.status_code < 500, (path, response.text)
        assert response.status_code != 202 or webhook is None

    @given(name=surrogates | controls | st.text(min_size=1, max_size=20), field=st.sampled_from(
        ["dtype", "shape", "data_offsets"]), value=hostile_values | st.just([2**64, 0]) | st.just([2**40] * 40),
        count=st.integers(min_value=1, max_value=80))
    @settings(max_examples=HOSTILE_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def upload_header(name, field, value, count):
        header = {name: _header_entry(value, field)}
        header.update({f"z{i}": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]} for i in range(count - 1)})
        response = upload(api, tenant, raw_safetensors(header, b"\0" * 4))
        assert response.status_code < 500, response.text

    submit()
    upload_header()
    _listings_answer(api, tenant)
