"""Property-based fuzzing of the whole HTTP surface (native API, KServe V2, TF Serving REST),
generated from the service's own OpenAPI document (``GET /openapi.json``) with schemathesis,
against a real Gunicorn.

Every operation gets requests that follow the schema and requests that break it (wrong types,
missing or extra fields, odd strings in paths, query and headers), with and without the admin
token (except that it never unloads a model: an unloaded model answers 503 by design), with
made-up and real model names. Each response must not be a 5xx and must conform to
the document: a documented status, the documented content type and headers, a body that
validates against its schema, and a schema-breaking request must be refused. The one check left
out is that every schema-valid request succeeds: a schema cannot say "the bytes of a decodable
image" or "as many numbers as the model's input", so such requests are rightly refused.

Bounded: ``FUZZ_CASES`` planned cases shared out evenly between the operations (at least 1,000
are run: an operation without parameters runs out of distinct cases early), no
shrinking, typically 30-60 s on 2 busy cores.
"""

from __future__ import annotations

import collections
import math
import time

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from modelgen import publish_standard_models
from server import ServiceProcess

pytestmark = pytest.mark.slow

FUZZ_CASES = 1_600  # planned; operations without parameters run out of distinct cases early
ADMIN_TOKEN = "fuzz-admin-token"
# Path parameters that exist, so the fuzzer gets past 404 into the request handling.
KNOWN = {"name": "mnist", "version": 1, "label": "stable"}
AUTHORIZATIONS = [None, f"Bearer {ADMIN_TOKEN}", "Bearer wrong-token", "Basic c2NyYXRjaDpuZXQ=", "Bearer"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = publish_standard_models(tmp_path_factory.mktemp("registry"))
    (root / "mnist" / "serving.json").write_text('{"pinned": null, "labels": {"stable": 1}}')
    with ServiceProcess(root, workers=2, admin_token=ADMIN_TOKEN) as process:
        yield process


def case_strategy(operation):
    """One operation's cases, in both generation modes, with generated and with real path parameters."""
    names = {parameter.name for parameter in operation.path_parameters}
    known = {key: value for key, value in KNOWN.items() if key in names}
    strategies = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        strategies.append(operation.as_strategy(generation_mode=mode))
        if known:
            strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=known))
    return st.one_of(strategies)


def refused_as_not_http(response: requests.Response) -> bool:
    """Whether Gunicorn refused the request before any route saw it, because it is not valid HTTP
    (a generated header value with a NUL in it, say): 400 in the API's JSON error shape, with
    the connection closed. No operation documents that answer, since it belongs to no operation;
    tests/test_hostile_requests.py covers such requests."""
    if response.status_code != 400 or response.headers.get("Connection", "").lower() != "close":
        return False
    return response.json()["code"] in ("invalid_header", "invalid_method", "invalid_request_line", "bad_request")


@pytest.mark.timeout(600)  # a hang guard only: the run typically takes 30-60 s
def test_fuzzed_requests_get_documented_answers_and_no_server_error(server):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    per_operation = math.ceil(FUZZ_CASES / len(operations))
    statuses: collections.Counter = collections.Counter()
    started = time.monotonic()

    with requests.Session() as session:
        for operation in operations:
            @settings(max_examples=per_operation, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=case_strategy(operation), authorization=st.sampled_from(AUTHORIZATIONS))
            def check(case, authorization):
                if case.operation.path.endswith("/unload") and authorization == f"Bearer {ADMIN_TOKEN}":
                    authorization = "Bearer wrong-token"  # an unloaded model answers 503 by design
                headers = {"Authorization": authorization} if authorization else None
                response = case.call(base_url=server.url, session=session, headers=headers, timeout=30)
                statuses[response.status_code] += 1
                if refused_as_not_http(response):
                    return
                case.validate_response(response, excluded_checks=[positive_data_acceptance], headers=headers)

            check()

    elapsed = time.monotonic() - started
    print(f"\n{sum(statuses.values())} fuzzed requests over {len(operations)} operations in {elapsed:.0f} s: "
          f"{dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= 1_000, statuses
    assert not [status for status in statuses if status >= 500], statuses
    # The fuzzer reached past validation and authentication too, not only into refusals.
    assert statuses[200] > 100 and statuses[401] and statuses[403] and statuses[422], statuses
    # And the service is still well.
    assert requests.get(server.url + "/readyz", timeout=10).status_code == 200
