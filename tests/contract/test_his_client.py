"""The HIS API as a hospital's IT vendor meets it (issue 26), from specs/his-api.yaml alone:

- the document validated by a standard validator (openapi-spec-validator);
- a client generated from it by a standard generator (openapi-python-client), into a temporary
  directory at test time, driving submit → read → lookup → cancel → retry (with and without an
  Idempotency-Key), the catalogue and refusals, against `medswitch run` serving the API on its
  own port over TLS (a self-signed certificate made here), every answer parsed by the
  generated models;
- the sandbox's published HIS examples (`sandbox/his-examples.json`) and the document's own
  examples run as printed; /metrics and health only on the [http] port; UTF-8 only.

Imports nothing of ours: the daemon is a subprocess (tests/contract/daemon.py)."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import importlib
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from openapi_spec_validator import validate

from tests.contract.daemon import Deployment, free_port, running

SPEC = Path(__file__).parents[2] / "specs" / "his-api.yaml"
CENTRE_ZONE = ZoneInfo("Asia/Shanghai")  # the spec: the centre's zone by default
GENERATOR = Path(sys.executable).parent / "openapi-python-client"
TIMEOUT_S = 30.0


def _spec() -> dict[str, Any]:
    loaded = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_the_document_is_valid_openapi() -> None:
    validate(_spec())  # raises on any defect


# -- a daemon serving the HIS API on its own TLS port ---------------------------------------------
def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "his.crt", directory / "his.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


@dataclass(frozen=True)
class Served:
    deployment: Deployment
    url: str  # https://127.0.0.1:<his port>
    tls: ssl.SSLContext  # trusts the test's certificate

    def basic(self, institution: str) -> str:
        pair = f"{institution}:{self.deployment.his_token(institution)}"
        return base64.b64encode(pair.encode()).decode()

    def call(
        self,
        institution: str,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
        url: str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(
            (url or self.url) + path, data=body, method=method,
            headers={"Authorization": "Basic " + self.basic(institution),
                     "Content-Type": content_type},
        )
        context = self.tls if (url or self.url).startswith("https") else None
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("his-tls")
    cert, key = _self_signed(tmp)
    port = free_port()
    extra = f'\n[his]\nport = {port}\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
    with running(tmp, extra) as deployment:
        yield Served(deployment, f"https://127.0.0.1:{port}", ssl.create_default_context(
            cafile=str(cert)))


@pytest.fixture(scope="module")
def client_package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    out = tmp_path_factory.mktemp("generated")
    env = {**os.environ, "PATH": f"{GENERATOR.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [str(GENERATOR), "generate", "--path", str(SPEC), "--meta", "none",
         "--output-path", str(out / "his_client")],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("his_client")
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n == "his_client" or n.startswith("his_client.")]:
            del sys.modules[name]


def _today() -> str:
    return dt.datetime.now(CENTRE_ZONE).date().isoformat()


# -- the generated client -------------------------------------------------------------------------
def test_a_generated_client_submits_reads_looks_up_cancels_and_retries(
    served: Served, client_package: ModuleType
) -> None:
    api = importlib.import_module("his_client.api.default")
    models = importlib.import_module("his_client.models")
    client = client_package.AuthenticatedClient(
        base_url=served.url, token=served.basic("h1"), prefix="Basic", verify_ssl=served.tls,
        raise_on_unexpected_status=True,
    )
    card = served.deployment.listing()["cards"][0]["card_no"]  # type: ignore[index]
    number, key = f"VENDOR-{uuid.uuid4().hex[:12]}", str(uuid.uuid4())
    bill = {
        "his_bill_no": number, "card_no": card, "service_date": _today(),
        "lines": [{"code": "A02", "quantity": 1, "unit_price_fen": 500},
                  {"code": "A01", "quantity": 2, "unit_price_fen": 1000}],
    }
    body = models.BillSubmission.from_dict(bill)
    with client as session:
        submit = importlib.import_module("his_client.api.default.submit_bill")
        first = submit.sync_detailed(client=session, body=body, idempotency_key=key)
        assert first.status_code == 201, first.content
        stored = first.parsed
        assert isinstance(stored, models.BillView) and stored.state.value == "open"
        assert stored.split.total_fen == 2_500 and stored.his_bill_no == number

        read = importlib.import_module("his_client.api.default.get_bill")
        assert read.sync(client=session, bill_id=stored.bill_id).bill_id == stored.bill_id

        find = importlib.import_module("his_client.api.default.find_bills")
        page = find.sync(client=session, his_bill_no=number)
        assert [b.bill_id for b in page.bills] == [stored.bill_id] and page.next_cursor is None

        cancel = importlib.import_module("his_client.api.default.cancel_bill")
        cancelled = cancel.sync_detailed(client=session, bill_id=stored.bill_id,
                                         idempotency_key=str(uuid.uuid4()))
        assert cancelled.status_code == 200 and cancelled.parsed.state.value == "cancelled"

        # the day's reconciliation: the bill, cancelled, with its shares; the day's totals
        reconcile = importlib.import_module("his_client.api.default.get_reconciliation")
        day = dt.date.fromisoformat(_today())
        seen, cursor = [], None
        for _page in range(1000):  # the sandbox's day holds what other tests billed too
            page = reconcile.sync(client=session, service_date=day, limit=100, cursor=cursor)
            assert isinstance(page, models.ReconciliationPage) and page.service_date == day
            seen += [line for line in page.bills if line.his_bill_no == number]
            cursor = page.next_cursor if isinstance(page.next_cursor, str) else None
            if cursor is None:
                break
        assert [(line.bill_id, line.state.value, line.total_fen) for line in seen] == [
            (stored.bill_id, "cancelled", 2_500)]
        cancelled_total = {t.state.value: t for t in page.totals}["cancelled"]
        assert cancelled_total.bills >= 1 and cancelled_total.total_fen >= 2_500

        # the retry by Idempotency-Key: the first answer as it was sent
        replay = submit.sync_detailed(client=session, body=body, idempotency_key=key)
        assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
        assert replay.parsed.bill_id == stored.bill_id and replay.parsed.state.value == "open"
        # the retry by bill number: the stored bill as it is now
        again = submit.sync_detailed(client=session, body=body)
        assert again.status_code == 200 and again.parsed.state.value == "cancelled"
        # the key once more, for another bill: refused, nothing done
        other = models.BillSubmission.from_dict({**bill, "his_bill_no": number + "-2"})
        reused = submit.sync_detailed(client=session, body=other, idempotency_key=key)
        assert reused.status_code == 422 and isinstance(reused.parsed, models.Error)
        assert reused.parsed.error.code == "idempotency_key_reused"
        assert find.sync(client=session, his_bill_no=number + "-2").bills == []
        assert api is not None


def test_a_generated_client_reads_the_catalogue_and_its_refusals(
    served: Served, client_package: ModuleType
) -> None:
    models = importlib.import_module("his_client.models")
    catalogue = importlib.import_module("his_client.api.default.get_catalogue")
    price = importlib.import_module("his_client.api.default.price_check")
    card = served.deployment.listing()["cards"][0]["card_no"]  # type: ignore[index]
    for institution, bed_day_billable in (("h1", True), ("p1", False)):
        client = client_package.AuthenticatedClient(
            base_url=served.url, token=served.basic(institution), prefix="Basic",
            verify_ssl=served.tls,
        )
        with client as session:
            page = catalogue.sync_detailed(client=session, limit=3)
            assert page.status_code == 200 and len(page.parsed.items) == 3
            codes = [item.code for item in page.parsed.items]
            rest = catalogue.sync(client=session, cursor=page.parsed.next_cursor, limit=500)
            items = {i.code: i for i in [*page.parsed.items, *rest.items]}
            assert codes == sorted(codes) and rest.next_cursor is None and "A01" in items
            bed_day = items["B04"]
            assert (bed_day.unit, bed_day.category) == ("日", "bed_day")
            assert bed_day.billable is bed_day_billable and bed_day.ceiling_fen > 0
            etag = page.headers["ETag"]
            unchanged = session.get_httpx_client().get(
                "/his/v1/catalogue", params={"limit": 3}, headers={"If-None-Match": etag}
            )
            assert unchanged.status_code == 304 and not unchanged.content

            lines = [{"code": "A01", "quantity": 1, "unit_price_fen": 1000},
                     {"code": "B04", "quantity": 1, "unit_price_fen": 5000}]
            check = models.PriceCheckRequest.from_dict(
                {"card_no": card, "service_date": _today(), "lines": lines}
            )
            priced = price.sync_detailed(client=session, body=check)
            if bed_day_billable:
                assert priced.status_code == 200 and priced.parsed.split.total_fen == 6_000
            else:
                assert priced.status_code == 422
                error = priced.parsed.error
                assert (error.code, error.field) == ("category_not_allowed", "/lines/1/code")
                assert error.request_id == priced.headers["X-Request-Id"]


# -- published examples, ports, encoding ----------------------------------------------------------
def test_the_sandbox_examples_answer_as_published(served: Served) -> None:
    sandbox = served.deployment.sandbox
    published = json.loads((sandbox / "his-examples.json").read_text())
    assert published["url"] == served.url
    assert published["card_no"] == served.deployment.listing()["cards"][0]["card_no"]  # type: ignore[index]
    for example in published["requests"]:
        body = json.dumps(example["body"]).encode() if "body" in example else None
        status, _, answer = served.call(
            example["institution"], example["method"], example["path"], body
        )
        expected = example["expect"]
        assert status == expected["status"], (example["name"], answer)
        if "code" in expected:
            error = json.loads(answer)["error"]
            assert (error["code"], error["field"]) == (expected["code"], expected["field"])


def test_the_documents_examples_use_the_sandbox_card_and_answer_as_described(
    served: Served,
) -> None:
    examples = _spec()["components"]["examples"]
    card = served.deployment.listing()["cards"][0]["card_no"]  # type: ignore[index]
    for name in ("Outpatient", "UnknownCode", "PharmacyBedDay"):
        assert examples[name]["value"]["card_no"] == card
    outpatient = {**examples["Outpatient"]["value"], "service_date": _today(),
                  "his_bill_no": f"DOC-{uuid.uuid4().hex[:12]}"}
    status, _, _ = served.call("h1", "POST", "/his/v1/bills", json.dumps(outpatient).encode())
    assert status == 201
    for name, institution, path, code, field in (
        ("UnknownCode", "h1", "/his/v1/bills", "unknown_item", "/lines/0/code"),
        ("PharmacyBedDay", "p1", "/his/v1/price-check", "category_not_allowed", "/lines/1/code"),
    ):
        body = {**examples[name]["value"], "service_date": _today()}
        status, _, answer = served.call(institution, "POST", path, json.dumps(body).encode())
        error = json.loads(answer)["error"]
        assert (status, error["code"], error["field"]) == (422, code, field)
        assert code in examples[name]["summary"] and field in examples[name]["summary"]


def test_metrics_and_health_are_not_on_the_hospital_port(served: Served) -> None:
    http_url = f"http://127.0.0.1:{served.deployment.http_port}"
    for path in ("/metrics", "/healthz", "/readyz"):
        status, _, _ = served.call("h1", "GET", path)
        assert status == 404, path
        status, _, _ = served.call("h1", "GET", path, url=http_url)
        assert status in (200, 503), path  # there (readyz: 503 until ready)
    status, _, _ = served.call("h1", "GET", "/his/v1/catalogue", url=http_url)
    assert status == 404  # the API is on its own port only
    with pytest.raises((OSError, http.client.HTTPException)):  # plain HTTP on the TLS port
        served.call("h1", "GET", "/his/v1/catalogue", url=served.url.replace("https", "http"))


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"\xef\xbb\xbf{}", "application/json", 400, "bad_encoding"),
        ('{"his_bill_no": "门诊"}'.encode("gbk"), "application/json", 400, "bad_encoding"),
        (b"{}", "application/json; charset=gbk", 415, "unsupported_media_type"),
        (b"{}", "text/plain", 415, "unsupported_media_type"),
    ],
    ids=["BOM", "GBK", "charset gbk", "text"],
)
def test_bodies_are_utf8_json_only(
    served: Served, body: bytes, content_type: str, status: int, code: str
) -> None:
    got, headers, answer = served.call("h1", "POST", "/his/v1/bills", body, content_type)
    error = json.loads(answer)["error"]
    assert (got, error["code"]) == (status, code)
    assert error["request_id"] == headers["X-Request-Id"]
    if code == "bad_encoding":
        assert "UTF-8" in error["message"]
