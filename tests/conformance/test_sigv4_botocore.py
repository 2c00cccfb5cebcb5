"""SigV4: spillway's verifier against botocore's signer, on requests botocore signed and sent.

Writes a corpus with `sigv4_corpus.py` (generated requests of every odd shape, and real boto3
clients of every API spillway serves, captured off a socket) and runs the Rust differential test
`tests/sigv4_botocore.rs` on it: each request must verify and each single change to a signed
element must be refused. Running it from here means the conformance step of `scripts/test.sh`
always runs it (the Rust step may run before the venv exists)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_botocore_signed_requests_verify_and_mutations_are_refused(tmp_path):
    corpus = tmp_path / "sigv4_corpus.json"
    gen = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("sigv4_corpus.py")), str(corpus), "--count", "500"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert gen.returncode == 0, gen.stdout + gen.stderr
    env = dict(os.environ, SPILLWAY_SIGV4_CORPUS=str(corpus), SPILLWAY_REQUIRE_PY="1")
    run = subprocess.run(
        ["cargo", "test", "--quiet", "--test", "sigv4_botocore", "--", "--nocapture"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, f"{gen.stdout}\n{out[-8000:]}"
    assert "sigv4_botocore: verified" in out, out[-4000:]
