"""The OpenAPI document against the running API, property-based (schemathesis): for every
operation, requests that fit the document and requests that do not, with each role's key.
No answer may be a 5xx, every status must be documented for its operation, every body must
fit its documented schema and media type, and requests that break the document must be
refused (4xx). Bounded: ``EXAMPLES`` cases per operation and mode (about 15 s in all)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.operations import OPERATIONS
from authsrv.model import ApiRole
from settlement.day import DayClock, close_open_day
from tests.api_helpers import api_in_thread
from tests.helpers import Provisioned

EXAMPLES = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
ROLES = {op.id: op.roles for op in OPERATIONS}


def _close_a_day(provisioned: Provisioned) -> None:
    from authsrv.app import open_store

    store = open_store(provisioned.data, 64)
    try:
        with store.write() as led:
            close_open_day(led, DayClock.of("00:00", "UTC"), time.time_ns() // 10**6, how="manual")
    finally:
        store.close()


def test_the_api_keeps_its_openapi_document(provisioned: Provisioned, tmp_path: Path) -> None:
    _close_a_day(provisioned)
    overrides = {
        "api.issue_count_max": 20,
        "api.issue_dir": str(tmp_path / "issued"),
        "settlement.dir": str(tmp_path / "settlement"),
        "api.self_client_burst": 50,
        "api.self_card_burst": 5,
    }
    with api_in_thread(provisioned.data, overrides) as api:
        base = f"http://127.0.0.1:{api.port}"
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        seen: dict[str, set[int]] = {}
        operations = []
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result  # the document loads whole
            operations.append(result.ok())
        assert {o.definition.raw["operationId"] for o in operations} == set(ROLES)
        for operation in operations:
            op_id = operation.definition.raw["operationId"]
            roles = ROLES[op_id]
            for role in (ApiRole.BACKOFFICE, ApiRole.STORE, ApiRole.SELFSERVICE):
                if role not in roles and role is not ApiRole.BACKOFFICE:
                    continue  # one role that may not call it is enough (backoffice)
                auth = {"Authorization": f"Bearer {api.tokens.of_role(role)}"}
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    _run(operation, mode, base, auth, seen.setdefault(op_id, set()))
        # Every operation was reached and answered something other than the shared refusals.
        for op_id, statuses in seen.items():
            assert statuses - {401, 403, 413, 429, 503}, (op_id, statuses)


def _run(
    operation: Any, mode: GenerationMode, base: str, auth: dict[str, str], seen: set[int]
) -> None:
    checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        response = case.call(base_url=base, headers=auth, timeout=10)
        seen.add(response.status_code)
        case.validate_response(response, checks=checks, headers=auth)

    check()
