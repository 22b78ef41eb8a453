"""How many log lines per second ``secrets.Redactor`` redacts (it runs on every line a host sends).

Run: python benchmarks/bench_redact.py   (a few seconds)

Each case redacts the same 20,000 lines with one redactor, 7 times; the median rate is shown.
The lines are what a training job prints (progress, metrics, warnings), 80 characters on
average; "5% with a secret" puts a secret in one line of twenty; "64 KiB lines" are lines as
long as the local host's cut, in lines per second.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from nosana_magic.secrets import Redactor

LINES = 20_000
REPEATS = 7

TOKEN = "hf_" + "Qw7eRt9yUi0oPa1sDf2gHj3kLz4xCv5bNm"
PASSWORD = "p@ss'wo\"rd\t42"
AWS = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GITHUB = "ghp_" + "x9Yz8Wv7Ut6Sr5Qp4On3Ml2Kj1Ih0Gf9Ed8"
PEM = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(
    "".join(random.Random(i).choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                                     k=64))
    for i in range(26)
) + "\n-----END PRIVATE KEY-----\n"
CREDENTIALS = json.dumps({
    "type": "service_account", "project_id": "my-project-123",
    "private_key_id": "0123456789abcdef0123456789abcdef01234567",
    "private_key": PEM, "client_email": "trainer@my-project-123.iam.gserviceaccount.com",
}, indent=2)


def _lines(with_secret: float, secret: str, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    templates = (
        "epoch {e} step {s}/5000 loss={l:.4f} lr=3.0e-04 elapsed {t:.1f}s",
        "[INFO] {t:.3f} saving checkpoint to /workspace/ckpt/step-{s}.pt",
        "WARNING: gradient norm {l:.2f} clipped to 1.0 (step {s})",
        "{s:>6} | {bar} | {e}%",
        "",
    )
    out = []
    for i in range(LINES):
        text = rng.choice(templates).format(e=i % 100, s=i, l=rng.random(), t=i * 0.37,
                                            bar="#" * (i % 40))
        if rng.random() < with_secret:
            text += f" token={secret}"
        out.append(text)
    return out


def _rate(redactor: Redactor, lines: list[str]) -> float:
    times = []
    redact = redactor.redact
    for _ in range(REPEATS):
        start = time.perf_counter()
        for line in lines:
            redact(line)
        times.append(time.perf_counter() - start)
    return len(lines) / statistics.median(times)


def main() -> None:
    plain = _lines(0.0, "")
    cases = [
        ("no secrets (empty redactor)", Redactor.empty(), plain),
        ("1 token, no secret in the lines", Redactor({"HF_TOKEN": TOKEN}), plain),
        ("3 tokens, no secret in the lines",
         Redactor({"HF_TOKEN": TOKEN, "GH": GITHUB, "AWS": AWS}), plain),
        ("3 secrets, one with quotes and a tab",
         Redactor({"HF_TOKEN": TOKEN, "PW": PASSWORD, "AWS": AWS}), plain),
        ("1 token, 5% with a secret", Redactor({"HF_TOKEN": TOKEN}), _lines(0.05, TOKEN)),
        ("PEM key + JSON credentials, no secret",
         Redactor({"KEY": PEM, "GOOGLE": CREDENTIALS}), plain),
        ("PEM key, 5% with a key line", Redactor({"KEY": PEM}),
         _lines(0.05, PEM.splitlines()[3])),
    ]
    long_lines = ["x" * (64 * 1024 - 40) + " loss=0.1 " + "y" * 30 for _ in range(200)]
    print(f"{'case':<40} {'lines/s':>12}")
    for name, redactor, lines in cases:
        print(f"{name:<40} {_rate(redactor, lines):>12,.0f}")
    rate = _rate(Redactor({"HF_TOKEN": TOKEN}), long_lines)
    print(f"{'1 token, 64 KiB lines':<40} {rate:>12,.0f}")


if __name__ == "__main__":
    main()
