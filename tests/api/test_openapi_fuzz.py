"""Property-based run over the OpenAPI schema (schemathesis): no request may produce a 5xx.

Schema-valid and schema-violating requests are generated for every operation. The
other default checks run too (response bodies, content types and status codes match
the schema, auth is not ignored), except two that judge the API's leniency rather
than its errors: "schema-valid data is accepted" (a schema cannot say that a job's
artifact ids must exist, so 422s there are right) and "schema-violating data is
rejected" (unknown query parameters are ignored, as HTTP APIs usually do).
Bounded to a few examples per operation so the module stays well under a minute.
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from tests.support.http import transfer_spec

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
