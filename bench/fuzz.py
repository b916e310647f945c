#!/usr/bin/env python3
"""Long-run in-process fuzzer: POS framers, the XML reader, decimals and host-answer translation.

Every input is one byte naming the target, then that target's data:
  0 framing    a byte stream for the framers (any dialect and limit, random chunking; with a
               flag, valid frames with correct CRCs are built from the data first: round trip)
  1 xml        read_request(data)
  2 decimal    parse_decimal(data as text)
  3 translate  translate_rewards(host rewards as JSON, a basket) and the AddRewards written
  4 receipt    receipt_lines(JSON)
  5 pipeline   read_request, then the host's rewards on that basket, then the response written
               and read back as the POS does
Findings: an exception other than the target's own error (FramingError, XmlError), a broken
contract (an amount out of bounds, a frame that does not round-trip, a response the POS cannot
read), and any single input slower than --slow seconds. Each finding is printed once by kind with
its smallest input, and saved to --artifacts; `--replay FILE` runs one input again.

Engines: atheris (coverage-guided libFuzzer, when installed) or `mutate` (a seeded mutation loop
over the real messages in shared/field-captures and the simulator's, with hostile values).
Stops by itself after --count inputs or --seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import sys
import tempfile
import time
import traceback
import zlib
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGETS = ["framing", "xml", "decimal", "translate", "receipt", "pipeline"]


def _instrumented_imports(engine: str):
    """Import the code under test, instrumented for coverage when atheris drives it."""
    if engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["app"]):
            import app.host.translate
            import app.money
            import app.pos.framing
            import app.pos.xmlcodec  # noqa: F401


def _have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["auto", "atheris", "mutate"], default="auto")
    parser.add_argument("--count", type=int, default=1_000_000, help="inputs to run")
    parser.add_argument("--seconds", type=float, default=3600.0, help="stop after this long")
    parser.add_argument("--slow", type=float, default=1.0, help="one input slower: a finding")
    parser.add_argument("--seed", type=int, default=2026, help="mutate engine: random seed")
    parser.add_argument("--max-len", type=int, default=16384, help="atheris: longest input")
    parser.add_argument("--artifacts", type=Path, help="where findings are saved")
    parser.add_argument("--replay", type=Path, nargs="*", help="run these saved inputs and stop")
    args = parser.parse_args()

    engine = args.engine
    if engine == "auto":
        engine = "atheris" if _have_atheris() and not args.replay else "mutate"
    _instrumented_imports(engine)
    logging.disable(logging.CRITICAL)  # dropped-reward warnings by the million
    harness = Harness(args.slow)
    if args.replay:
        return harness.replay(args.replay)
    artifacts = args.artifacts or Path(tempfile.mkdtemp(prefix="connectbox-fuzz-"))
    artifacts.mkdir(parents=True, exist_ok=True)
    run = Run(harness, args.count, args.seconds, artifacts, engine)
    print(
        f"fuzz: engine {engine}, up to {args.count:,} inputs or {args.seconds:.0f} s; "
        f"findings saved in {artifacts}",
        flush=True,
    )
    if engine == "atheris":
        run_atheris(run, args.max_len)  # does not return: Run.finish exits
    else:
        run_mutate(run, args.seed)
    return run.finish()


# ---- the targets --------------------------------------------------------------------------------


class Contract(Exception):
    """A property broken without an exception from the code under test."""


class Harness:
    def __init__(self, slow_s: float) -> None:
        from app.host.translate import receipt_lines, translate_rewards
        from app.money import parse_decimal
        from app.pos import framing
        from app.pos.model import RequestHeader, Response
        from app.pos.xmlcodec import XmlError, parse_xml, read_request, write_response
        from tests.fuzz.corpus import AMOUNT_LIMIT, HOST_REWARDS, sample_basket

        self.slow_s = slow_s
        self.stalls = 0  # inputs slow once but not when run again
        self.framing = framing
        self.read_request, self.parse_xml, self.write_response = (
            read_request,
            parse_xml,
            write_response,
        )
        self.XmlError = XmlError
        self.parse_decimal = parse_decimal
        self.translate_rewards, self.receipt_lines = translate_rewards, receipt_lines
        self.Response, self.RequestHeader = Response, RequestHeader
        self.limit = AMOUNT_LIMIT
        self.host_rewards = HOST_REWARDS
        self.basket = sample_basket()
        self.allowed = {
            "framing": (framing.FramingError,),
            "xml": (XmlError,),
            "pipeline": (XmlError,),
        }
        self.run_target = [
            self.fuzz_framing,
            self.fuzz_xml,
            self.fuzz_decimal,
            self.fuzz_translate,
            self.fuzz_receipt,
            self.fuzz_pipeline,
        ]

    def one(self, data: bytes) -> tuple[str, str] | None:
        """Run one input; (kind, detail) of a finding, or None."""
        if not data:
            return None
        index = data[0] % len(TARGETS)
        target = TARGETS[index]
        started = time.perf_counter()
        finding = None
        try:
            self.run_target[index](data[1:])
        except Contract as broken:
            finding = (f"{target}: contract: {str(broken).split(':')[0]}", str(broken))
        except self.allowed.get(target, ()):
            pass
        except RecursionError as exc:
            finding = (f"{target}: RecursionError", repr(exc)[:300])
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            kind = f"{target}: {type(exc).__name__} at {Path(where.filename).name}:{where.lineno}"
            finding = (kind, "".join(traceback.format_exception(exc))[-1500:])
        elapsed = time.perf_counter() - started
        if finding is None and elapsed > self.slow_s:
            # Once more: a pause of a loaded machine (or a GC) is not the input's doing.
            again = time.perf_counter()
            with contextlib.suppress(Exception):
                self.run_target[index](data[1:])
            rerun = time.perf_counter() - again
            if rerun > self.slow_s:
                finding = (f"{target}: slow input", f"{elapsed:.2f} s, again {rerun:.2f} s")
            else:
                self.stalls += 1
        return finding

    def replay(self, paths: list[Path]) -> int:
        for path in paths:
            data = path.read_bytes()
            started = time.perf_counter()
            finding = self.one(data)
            took = time.perf_counter() - started
            print(f"{path}: {TARGETS[data[0] % len(TARGETS)] if data else '-'}, {took:.3f} s")
            print(f"  input: {data[:300]!r}{'...' if len(data) > 300 else ''}")
            print(f"  {finding[0]}\n{finding[1]}" if finding else "  no finding")
        return 0

    # -- framing ------------------------------------------------------------------------------

    def fuzz_framing(self, data: bytes) -> None:
        f = self.framing
        mode = data[0] if data else 0
        body = data[1:]
        dialect = ("passport", "eps", "auto")[mode % 3]
        max_frame = (96, 4096, f.DEFAULT_MAX_FRAME)[(mode >> 2) % 3]
        rng = random.Random(zlib.crc32(data))
        expected = None
        if mode & 0x40:  # valid frames built from the data: they must come back exactly
            eps = dialect == "eps" or (dialect == "auto" and mode & 0x20)
            parts = body.split(b"|")[:32]
            frames, expected = [], []
            for part in parts:
                flags, payload = (part[0], part[1:]) if part else (0, b"")
                if eps:
                    frames.append(f.encode_eps(payload))
                    expected.append((payload, False))
                else:
                    action = f.ACTION_HEARTBEAT if flags & 1 else f.ACTION_MESSAGE
                    frames.append(f.encode_passport(payload, action, bool(flags & 2)))
                    expected.append((payload, action == f.ACTION_HEARTBEAT))
            body = b"".join(frames)
            if any(len(p) > max_frame for p, _ in expected):
                expected = None  # an over-long frame: FramingError is the right answer
        framer = f.make_framer(dialect, max_frame)
        header = f.PASSPORT_HEADER.size
        got = []
        at = 0
        while at < len(body) or at == 0:
            size = rng.choice((1, 2, 3, 7, 28, 64, 512, 65536))
            chunk = body[at : at + size]
            at += max(size, 1)
            try:
                got += framer.feed(chunk)
            except f.FramingError:
                if expected is not None:
                    raise Contract("round trip: valid frames refused") from None
                raise
            if framer.pending > max_frame + header:
                raise Contract(f"buffer: {framer.pending} bytes pending (limit {max_frame})")
            for frame in got:
                if len(frame.payload) > max_frame:
                    raise Contract(f"frame size: {len(frame.payload)} over {max_frame}")
            if at >= len(body):
                break
        if expected is not None and [(g.payload, g.heartbeat) for g in got] != expected:
            raise Contract("round trip: frames differ from what was encoded")

    # -- XML ----------------------------------------------------------------------------------

    def fuzz_xml(self, data: bytes) -> None:
        request = self.read_request(data, "eps" if len(data) % 2 else "passport")
        self._check_request(request)

    def _check_request(self, request) -> None:
        values = [request.points_redeemed, request.final_total]
        for line in request.transaction.lines if request.transaction else []:
            values += [line.quantity, line.unit_price, line.regular_price, line.amount]
            values += [line.tender_amount, *line.applied_rewards.values()]
        for value in values:
            if value is not None:
                self._bounded("amount: out of bounds in a Request", value, -6)

    def _bounded(self, what: str, value: object, places: int, signed_ok: bool = True) -> None:
        if not isinstance(value, Decimal) or not value.is_finite():
            raise Contract(f"{what}: {value!r}")
        if value.copy_abs() >= self.limit or value.as_tuple().exponent < places:
            raise Contract(f"{what}: {value!r}")
        if not signed_ok and value.is_signed():
            raise Contract(f"{what.split(':')[0]}: negative (or -0) {value!r}")

    # -- decimals -----------------------------------------------------------------------------

    def fuzz_decimal(self, data: bytes) -> None:
        text = data.decode("utf-8", "replace") if data[:1] != b"\x00" else None
        value = self.parse_decimal(text)
        if value is not None:
            self._bounded("amount: parse_decimal out of bounds", value, -6)
            if "e" in text.lower():
                raise Contract(f"amount: exponent accepted {text[:40]!r} -> {value!r}")

    # -- host answers -------------------------------------------------------------------------

    def _rewards_from(self, data: bytes) -> object:
        text = data.decode("utf-8", "replace")
        try:
            return json.loads(text)  # as the host client reads it: NaN and Infinity included
        except (ValueError, RecursionError):
            pass
        # Not JSON: one reward from '|'-separated fields, each JSON if it parses.
        keys = ["reward_id", "target_line", "method", "value", "limit_quantity", "receipt_short"]
        reward = {}
        for key, field in zip(keys, text.split("|"), strict=False):
            try:
                reward[key] = json.loads(field)
            except (ValueError, RecursionError):
                reward[key] = field
        return [reward]

    def fuzz_translate(self, data: bytes) -> None:
        choice = data[0] % 4 if data else 0
        txn = [self.basket, None, self.basket, self.basket][choice]
        dialect = "eps" if choice == 2 else "passport"
        self._translate(self._rewards_from(data[1:]), txn, dialect)

    def _translate(self, rewards, txn, dialect: str) -> None:
        from app.host.payload import basket_total

        result = self.translate_rewards(rewards, txn, dialect)
        total = basket_total(txn)
        for reward in result.rewards:
            amount = result.amounts.get(reward.reward_id)
            self._bounded("reward amount: out of bounds", amount, -2, signed_ok=False)
            self._bounded("reward value: out of bounds", reward.value, -6, signed_ok=False)
            if amount > total:
                raise Contract(f"reward amount: {amount} over the basket's {total}")
        if sum(result.amounts.values(), Decimal(0)) > total:
            raise Contract("reward amount: rewards sum over the basket")
        response = self.Response(
            stem="GetRewards", header=self.RequestHeader(), add_rewards=result.rewards
        )
        response.receipt_lines = self.receipt_lines(rewards if isinstance(rewards, list) else [])
        xml = self.write_response(response, dialect)
        try:
            self.parse_xml(xml)
        except self.XmlError as exc:
            raise Contract(f"response: the POS cannot read it ({exc})") from None

    def fuzz_receipt(self, data: bytes) -> None:
        try:
            lines = json.loads(data.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            lines = data.decode("utf-8", "replace").split("|")
        for line in self.receipt_lines(lines):
            if not isinstance(line, str) or not 0 < len(line) <= 40:
                raise Contract(f"receipt line: {line!r}")

    # -- all of it ----------------------------------------------------------------------------

    def fuzz_pipeline(self, data: bytes) -> None:
        dialect = "eps" if len(data) % 2 else "passport"
        request = self.read_request(data, dialect)
        self._translate(self.host_rewards, request.transaction, dialect)
        response = self.Response(stem=request.stem, header=request.header)
        xml = self.write_response(response, dialect)
        try:
            self.parse_xml(xml)
        except self.XmlError as exc:
            raise Contract(f"response: the POS cannot read it ({exc})") from None
        self._check_request(request)  # last: a crash further on is the bigger news


# ---- bookkeeping --------------------------------------------------------------------------------


class Run:
    def __init__(self, harness: Harness, count: int, seconds: float, out: Path, engine: str):
        self.harness, self.count, self.seconds, self.out = harness, count, seconds, out
        self.engine = engine
        self.inputs = 0
        self.per_target = [0] * len(TARGETS)
        self.findings: dict[str, tuple[bytes, str, int]] = {}  # kind -> smallest input, detail, n
        self.started = time.monotonic()
        self.next_report = self.started + 10
        self.slowest = (0.0, b"")

    @property
    def done(self) -> bool:
        return self.inputs >= self.count or time.monotonic() - self.started >= self.seconds

    def feed(self, data: bytes) -> None:
        started = time.perf_counter()
        finding = self.harness.one(data)
        took = time.perf_counter() - started
        if took > self.slowest[0]:
            self.slowest = (took, data)
        self.inputs += 1
        if data:
            self.per_target[data[0] % len(TARGETS)] += 1
        if finding is not None:
            self.record(finding, data)
        if self.inputs % 1000 == 0 and time.monotonic() > self.next_report:
            self.report()

    def record(self, finding: tuple[str, str], data: bytes) -> None:
        kind, detail = finding
        known = self.findings.get(kind)
        if known is None:
            print(f"\nFINDING {kind}\n  input: {data[:200]!r}\n{detail}\n", flush=True)
        if known is None or len(data) < len(known[0]):
            self.findings[kind] = (data, detail, (known[2] if known else 0) + 1)
            name = "".join(c if c.isalnum() else "_" for c in kind)[:80]
            (self.out / f"{name}.bin").write_bytes(data)
        else:
            self.findings[kind] = (known[0], known[1], known[2] + 1)

    def report(self) -> None:
        elapsed = time.monotonic() - self.started
        print(
            f"fuzz: {self.inputs:,} inputs in {elapsed:.0f} s = {self.inputs / elapsed:,.0f}/s, "
            f"{len(self.findings)} kinds of finding",
            flush=True,
        )
        self.next_report = time.monotonic() + 10

    def minimize(self, kind: str, data: bytes, budget_s: float = 10.0) -> bytes:
        """A smaller input with the same finding: drop chunks, then bytes, while it reproduces."""
        if kind.endswith("slow input"):
            return data
        deadline = time.monotonic() + budget_s
        step = max(1, len(data) // 2)
        while step >= 1 and time.monotonic() < deadline:
            at, shrunk = 1, False
            while at < len(data) and time.monotonic() < deadline:
                candidate = data[:at] + data[at + step :]
                found = self.harness.one(candidate)
                if found is not None and found[0] == kind:
                    data, shrunk = candidate, True
                else:
                    at += step
            if not shrunk:
                step //= 2
        return data

    def finish(self) -> int:
        for kind, (data, detail, seen) in list(self.findings.items()):
            small = self.minimize(kind, data)
            if len(small) < len(data):
                detail = (self.harness.one(small) or (kind, detail))[1]
                self.findings[kind] = (small, detail, seen)
                name = "".join(c if c.isalnum() else "_" for c in kind)[:80]
                (self.out / f"{name}.bin").write_bytes(small)
        elapsed = time.monotonic() - self.started
        rate = self.inputs / elapsed if elapsed else 0.0
        print(f"\nfuzz: engine {self.engine}; {self.inputs:,} inputs in {elapsed:.1f} s")
        print(f"fuzz: rate {rate:,.0f} inputs/s on {os.cpu_count()} cores")
        spread = ", ".join(f"{t} {n:,}" for t, n in zip(TARGETS, self.per_target, strict=True))
        print(f"fuzz: by target: {spread}")
        took, data = self.slowest
        print(
            f"fuzz: slowest input {took * 1000:.1f} ms "
            f"({TARGETS[data[0] % len(TARGETS)] if data else '-'}, {len(data)} bytes)"
        )
        if self.harness.stalls:
            print(f"fuzz: {self.harness.stalls} inputs over --slow once but fast when run again")
        print(f"fuzz: findings: {len(self.findings)} kinds")
        for kind, (data, detail, seen) in sorted(self.findings.items()):
            print(f"  {kind} (seen {seen:,} times); smallest input ({len(data)} bytes):")
            print(f"    {data[:300]!r}")
            print("    " + detail.strip().splitlines()[-1][:300])
        if self.findings:
            print(f"fuzz: inputs saved in {self.out}; replay with --replay {self.out}/*.bin")
        sys.stdout.flush()
        return 1 if self.findings else 0


# ---- engine: atheris (libFuzzer) ----------------------------------------------------------------


def _seed_inputs() -> list[bytes]:
    """Starting inputs for every target, from the real messages and the hostile values."""
    from tests.fuzz.corpus import (
        HOST_RECEIPT_LINES,
        HOST_REWARDS,
        HOSTILE_NUMBERS,
        captured_requests,
        frame_seeds,
        request_seeds,
        text_spans,
    )

    seeds = []
    # Framing mode byte: dialect (passport, eps, auto) = mode % 3, limit (96, 4096, 1 MiB) =
    # (mode >> 2) % 3, 0x40 = build valid frames from '|'-separated parts, 0x20 = EPS for auto.
    for frame in frame_seeds():
        seeds += [b"\x00\x0a" + frame, b"\x00\x06" + frame, b"\x00\x02" + frame]
    for payload in request_seeds()[:20]:
        seeds += [b"\x00\x48\x00" + payload + b"|\x03" + payload[:60]]
        seeds += [b"\x00\x6a\x00" + payload, b"\x00\x42\x02" + payload[:90]]
    for payload in request_seeds():
        seeds += [b"\x01" + payload, b"\x05" + payload]
    numbers = {HOSTILE_NUMBERS[i].encode() for i in range(len(HOSTILE_NUMBERS))}
    for payload in captured_requests()[:10]:
        numbers |= {payload[a:b] for a, b in text_spans(payload)}
    seeds += [b"\x02" + n for n in sorted(numbers)]
    seeds += [b"\x03\x00" + json.dumps(HOST_REWARDS).encode()]
    seeds += [b"\x03\x02" + json.dumps([r]).encode() for r in HOST_REWARDS]
    seeds += [b"\x03\x00SD-1|1|amount_off|1.00|2|LOYALTY", b"\x03\x01P|0|percent_off|10||X"]
    seeds += [b"\x04" + json.dumps(HOST_RECEIPT_LINES).encode()]
    return seeds


def _dictionary() -> list[bytes]:
    from app.pos import wire
    from tests.fuzz.corpus import HOSTILE_NUMBERS, XML_ENCODINGS

    names = [
        *wire.HEADER_FIELDS.values(),
        *wire.TRANSACTION_HEADER_FIELDS.values(),
        *wire.LINE_FIELDS.values(),
        *wire.LINE_KINDS,
        wire.LINE,
        wire.LINE_NUMBER,
        wire.DETAIL_GROUP,
        wire.TRANSACTION_DATA,
        wire.PROMOTION,
        wire.PROMOTION_AMOUNT,
        wire.REWARD_ID,
        wire.LOYALTY_ID,
        wire.POINTS_REDEEMED,
        wire.FINAL_TOTAL,
    ]
    tokens = [f"<{n}>".encode() for n in names] + [f"</{n}>".encode() for n in names]
    tokens += [n.encode() for n in HOSTILE_NUMBERS if 0 < len(n) < 40]
    tokens += [f'encoding="{e}"'.encode() for e in XML_ENCODINGS if 0 < len(e) < 40]
    tokens += [b'"amount_off"', b'"percent_off"', b'"new_price"', b'"per_unit_off"', b"NaN"]
    tokens += [b"Infinity", b'"target_line"', b'"limit_quantity"', b'"value"', b"POSLOYALTY"]
    return tokens


def _dict_line(token: bytes) -> str:
    return '"' + "".join(f"\\x{b:02x}" for b in token) + '"'


def run_atheris(run: Run, max_len: int) -> None:
    import atheris

    work = Path(tempfile.mkdtemp(prefix="connectbox-atheris-"))
    corpus = work / "corpus"
    corpus.mkdir()
    for n, seed in enumerate(_seed_inputs()):
        (corpus / f"seed{n:04d}").write_bytes(seed[:max_len])
    dictionary = work / "tokens.dict"
    dictionary.write_text("\n".join(_dict_line(t) for t in _dictionary()) + "\n")

    def one(data: bytes) -> None:
        run.feed(data)
        if run.done:
            code = run.finish()
            os._exit(code)

    libfuzzer = [
        sys.argv[0],
        f"-max_len={max_len}",
        f"-dict={dictionary}",
        "-timeout=60",
        "-rss_limit_mb=3072",
        "-print_final_stats=0",
        "-reload=0",
        str(corpus),
    ]
    atheris.Setup(libfuzzer, one)
    atheris.Fuzz()


# ---- engine: a seeded mutation loop -------------------------------------------------------------


def run_mutate(run: Run, seed: int) -> None:
    from tests.fuzz.corpus import HOSTILE_NUMBERS, XML_ENCODINGS, text_spans

    rng = random.Random(seed)
    seeds = _seed_inputs()
    by_target: dict[int, list[bytes]] = {}
    for s in seeds:
        by_target.setdefault(s[0], []).append(s)
    hostile = [n.encode() for n in HOSTILE_NUMBERS] + [b"x" * 5000, b"\xff", b"]]>", b"&amp;"]
    tokens = _dictionary()
    json_hostile = [
        "1E+99999",
        "1e-999999999",
        "-0",
        "NaN",
        float("inf"),
        float("nan"),
        -1,
        10**30,
        1e300,
        True,
        None,
        [],
        {},
        "x" * 300,
        [[[[[1]]]]],
        "123456789012345678901234567890",
    ]

    def mutate_bytes(data: bytearray) -> None:
        for _ in range(rng.choice((1, 1, 2, 3, 6))):
            op = rng.randrange(9)
            size = len(data)
            if op == 0 and size > 1:
                data[rng.randrange(1, size)] = rng.randrange(256)
            elif op == 1 and size > 1:
                at = rng.randrange(1, size)
                del data[at : at + rng.randrange(1, 64)]
            elif op == 2:
                at = rng.randrange(1, size + 1) if size else 0
                data[at:at] = rng.choice(tokens)
            elif op == 3 and size > 1:
                at = rng.randrange(1, size)
                chunk = data[at : at + rng.randrange(1, 200)]
                data[at:at] = chunk * rng.randrange(1, 40)
            elif op == 4 and size > 1:
                del data[rng.randrange(1, size) :]
            elif op in (5, 6, 7) and (spans := text_spans(bytes(data))):
                a, b = rng.choice(spans)
                data[a:b] = rng.choice(hostile)
            elif op == 8:
                encoding = rng.choice(XML_ENCODINGS).encode()
                data[1:1] = b'<?xml version="1.0" encoding="' + encoding + b'"?>'

    def mutate_json(data: bytes) -> bytes:
        try:
            value = json.loads(data[2:])
        except ValueError:
            return data
        leaves = []

        def walk(node, parent, key):
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(v, node, k)
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, node, i)
            if parent is not None:
                leaves.append((parent, key))

        walk(value, None, None)
        for _ in range(rng.choice((1, 1, 2, 3))):
            if leaves:
                parent, key = rng.choice(leaves)
                parent[key] = rng.choice(json_hostile)
        head = bytes([data[0], rng.randrange(4)])
        return head + json.dumps(value).encode()

    while not run.done:
        target = rng.choice((0, 0, 1, 1, 1, 2, 3, 3, 4, 5, 5))
        pool = by_target.get(target) or [bytes([target])]
        data = rng.choice(pool)
        if target == 3 and rng.random() < 0.7:
            data = mutate_json(data)
        elif target == 2 and rng.random() < 0.3:
            data = b"\x02" + rng.choice(hostile)
        else:
            buffer = bytearray(data)
            mutate_bytes(buffer)
            data = bytes(buffer)
        run.feed(data)


if __name__ == "__main__":
    sys.exit(main())
