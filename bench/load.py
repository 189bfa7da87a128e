"""A bounded load and soak run against a locally started app (127.0.0.1 only), through gradio_client.

    python bench/load.py                      # all parts, default sizes
    python bench/load.py --sessions 60 --concurrent 30 --skip-chat

Parts (each bounded; the run stops by itself):
1. `--concurrent` plan requests on a 5120×2880 photo at once, while another client uploads a decompression bomb:
   errors, p50/p95 latency, whether the bomb was refused.
2. `--sessions` fresh sessions in sequence, each uploading a 2560×1600 photo and planning it: server RSS and the
   temp dir's size and file count every `--every`, and RSS again after the sessions' lifetime has passed.
3. Probes: Pack with max_seq_len 10⁶ and 10¹², a strategy with in-range but enormous parameters: the reply and
   the server's RSS growth.
4. One attention request while two chats stream (tiny random-weight model).
Prints a table and writes bench/results/load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "load.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tree(root: Path) -> tuple[float, int, int]:
    """(MB, files, empty files) under root."""
    total = files = empty = 0
    for folder, _, names in os.walk(root):
        for name in names:
            try:
                size = os.stat(os.path.join(folder, name)).st_size
            except OSError:
                continue
            total += size
            files += 1
            empty += size == 0
    return total / 2**20, files, empty


def photo(path: Path, size: tuple[int, int]) -> str:
    import numpy as np
    from PIL import Image

    w, h = size
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = (127 + 60 * np.sin(x / 97) + 60 * np.cos(y / 71))[..., None] + rng.normal(0, 12, (h, w, 3))
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(path, quality=90)
    return str(path)


def bomb(path: Path) -> str:
    """A 30000×30000 PNG of a few hundred KB: 900 MP when decoded."""
    import zlib

    w = h = 30000
    raw = zlib.compress(b"".join(b"\x00" + bytes(w) for _ in range(h)), 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return str(path)


class App:
    """The app in a child process on 127.0.0.1, with its own temp dir."""

    def __init__(self, ttl_s: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        # the default deployment: the server picks (and on exit removes) a temp dir of its own, named by its port
        self.temp = Path(tempfile.gettempdir()) / f"gridvlm-app-{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
        env.update({"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(self.port),
                    "GRIDVLM_STATE_TTL_S": str(ttl_s), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
                    "PYTHONPATH": str(ROOT)})
        self.proc = subprocess.Popen([sys.executable, "-m", "gridvlm.app"], env=env, cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit("the app exited during start")
                time.sleep(0.2)
        else:
            raise SystemExit("the app did not start in 120 s")

    def client(self):
        from gradio_client import Client

        # a generous read timeout: on a busy 2-core machine a queued plan can wait tens of seconds, and a client
        # giving up is not the server refusing
        return Client(self.url, verbose=False, httpx_kwargs={"timeout": 600})

    @property
    def rss(self) -> float:
        return rss_mb(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


PLAN = ("llava-next", True, 2048, "{}", False)


def upload(client, path: str):
    from gradio_client import handle_file

    return client.predict(handle_file(path), *PLAN, api_name="/upload")


def part_concurrent(app: App, big: str, the_bomb: str, n: int) -> dict:
    def one(_):
        start = time.perf_counter()
        try:
            upload(app.client(), big)
            return time.perf_counter() - start, None
        except Exception as exc:  # noqa: BLE001 - counted, reported
            return time.perf_counter() - start, f"{type(exc).__name__}: {exc}"[:200]

    bomb_result = {}

    def attack():
        try:
            upload(app.client(), the_bomb)
            bomb_result["refused"] = False
        except Exception as exc:  # noqa: BLE001
            message = str(exc)[:200]
            # refused means the server said why; a client-side timeout is no answer at all
            bomb_result.update(refused="timed out" not in message.lower(), message=message)

    rss0 = app.rss
    t = threading.Thread(target=attack)
    t.start()
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    t.join(300)
    times = sorted(r[0] for r in results)
    errors = [r[1] for r in results if r[1]]
    return {"requests": n, "errors": len(errors), "first_errors": errors[:3], "p50_s": statistics.median(times),
            "p95_s": times[max(0, int(round(0.95 * len(times))) - 1)], "bomb": bomb_result,
            "rss_before_mb": rss0, "rss_after_mb": app.rss}


def part_sessions(app: App, image: str, n: int, every: int, ttl_s: int) -> dict:
    rows = []
    _, files0, _ = tree(app.temp)
    rss0 = app.rss
    base = Path(image).read_bytes()
    for k in range(1, n + 1):
        # a distinct file per session (bytes after the JPEG's end marker, which decoders ignore): gradio stores
        # uploads by content hash, so one image for every session would hide per-session files
        mine = Path(image).with_name(f"session_{k}.jpg")
        mine.write_bytes(base + f"session {k}".encode())
        upload(app.client(), str(mine))
        mine.unlink()
        if k % every == 0 or k == n:
            mb, files, empty = tree(app.temp)
            rows.append({"sessions": k, "rss_mb": app.rss, "temp_mb": mb, "temp_files": files, "empty_files": empty})
            print(f"  {k} sessions: RSS {rows[-1]['rss_mb']:.0f} MB, temp {mb:.1f} MB in {files} files "
                  f"({empty} empty)", flush=True)
    time.sleep(ttl_s + 5)  # the soak itself: the sessions' lifetime passes (not a test; bounded)
    upload(app.client(), image)  # one event so gradio's state cleanup runs
    rss_end = app.rss
    mb, files, empty = tree(app.temp)
    return {"sessions": n, "rows": rows, "rss_start_mb": rss0, "rss_after_ttl_mb": rss_end,
            "rss_growth_per_session_mb": (rows[-1]["rss_mb"] - rss0) / n,
            "rss_growth_after_ttl_per_session_mb": (rss_end - rss0) / n,
            "temp_files_per_session": (files - files0) / n, "empty_files": empty}


def part_probes(app: App, image: str) -> dict:
    out = {}
    client = app.client()
    upload(client, image)
    probes = {
        "pack max_seq_len 1e6": lambda: client.predict(None, 10**6, 16, 1024, "given", "llava-next",
                                                       api_name="/pack_images"),
        "pack max_seq_len 1e12": lambda: client.predict(None, 10**12, 16, 1024, "given", "llava-next",
                                                        api_name="/pack_images"),
        "internvl 64 tiles of 4096": lambda: client.predict("internvl", True, 2048,
                                                            '{"max_tiles": 64, "tile_size": 4096}', False,
                                                            api_name="/update_plan"),
        "qwen2-vl pixels 1e10": lambda: client.predict("qwen2-vl", True, 2048,
                                                       '{"min_pixels": 1e10, "max_pixels": 1e10}', False,
                                                       api_name="/update_plan"),
        "params NaN": lambda: client.predict("internvl", True, 2048, '{"max_tiles": NaN}', False,
                                             api_name="/update_plan"),
    }
    for name, probe in probes.items():
        before = app.rss
        try:
            answer = probe()
            # a plan the server accepts may still refuse its views: the inline status line says so
            said = [x for x in (answer if isinstance(answer, (list, tuple)) else [answer])
                    if isinstance(x, str) and len(x) < 600
                    and any(w in x.lower() for w in ("limit", "too ", "refus", "cannot", "at most"))]
            message = f"plan accepted; status: {said[0]}" if said else "accepted"
        except Exception as exc:  # noqa: BLE001
            message = str(exc)[:160]
        out[name] = {"reply": message, "rss_growth_mb": app.rss - before}
    return out


def part_chat(app: App, image: str) -> dict:
    from gridvlm.app.chat_tab import tiny_choice
    from gridvlm.attention import LLM, WHOLE_ANSWER

    model = tiny_choice("llava-next")
    clients = [app.client() for _ in range(3)]
    for c in clients:
        upload(c, image)
    clients[0].predict(model, "none", api_name="/load_model")

    def chat(c):
        start = time.perf_counter()
        c.predict("What is here?", [], model, "none", "native", 64, 0.0, 1.0, api_name="/respond")
        return time.perf_counter() - start

    with ThreadPoolExecutor(3) as pool:
        chats = [pool.submit(chat, c) for c in clients[:2]]
        start = time.perf_counter()
        clients[2].predict("What is here?", [], model, "none", "native", 8, 0.0, 1.0, api_name="/respond")
        try:
            clients[2].predict(WHOLE_ANSWER, 0, 1, "mean", 0, LLM, 0.5, api_name="/show_attention")
            attention = "ok"
        except Exception as exc:  # noqa: BLE001
            attention = str(exc)[:160]
        attention_s = time.perf_counter() - start
        chat_s = [f.result() for f in chats]
    return {"chat_s": chat_s, "attention_s": attention_s, "attention": attention}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrent", type=int, default=30)
    ap.add_argument("--sessions", type=int, default=300)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--ttl", type=int, default=30, help="sessions' lifetime in the app (GRIDVLM_STATE_TTL_S), s")
    ap.add_argument("--skip-chat", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gridvlm-load-"))
    big = photo(work / "photo_5120x2880.jpg", (5120, 2880))
    mid = photo(work / "photo_2560x1600.jpg", (2560, 1600))
    the_bomb = bomb(work / "bomb.png")
    app = App(args.ttl)
    results: dict = {"started_rss_mb": app.rss}
    try:
        print(f"app on {app.url} (pid {app.proc.pid}), RSS {app.rss:.0f} MB", flush=True)
        results["concurrent"] = part_concurrent(app, big, the_bomb, args.concurrent)
        print("concurrent:", json.dumps(results["concurrent"])[:400], flush=True)
        results["probes"] = part_probes(app, big)
        results["sessions"] = part_sessions(app, mid, args.sessions, args.every, args.ttl)
        if not args.skip_chat:
            results["chat"] = part_chat(app, mid)
    finally:
        app.stop()
        results["temp_after_exit"] = tree(app.temp) if app.temp.exists() else (0.0, 0, 0)
    c, s = results["concurrent"], results["sessions"]
    rows = [
        ("concurrent plans (5120×2880)", f"{c['requests']} requests, {c['errors']} errors, p50 {c['p50_s']:.2f} s, "
                                         f"p95 {c['p95_s']:.2f} s; bomb refused: {c['bomb'].get('refused')}"),
        ("sessions", f"{s['sessions']}: RSS +{s['rss_growth_per_session_mb']:.2f} MB/session, after TTL "
                     f"+{s['rss_growth_after_ttl_per_session_mb']:.2f} MB/session"),
        ("temp files", f"{s['temp_files_per_session']:.2f} per session, {s['empty_files']} empty; after exit "
                       f"{results['temp_after_exit'][1]} files"),
    ]
    rows += [(f"probe: {k}", f"RSS +{v['rss_growth_mb']:.0f} MB · {v['reply'][:90]}") for k, v in results["probes"].items()]
    if "chat" in results:
        ch = results["chat"]
        rows.append(("attention during 2 chats", f"{ch['attention']} in {ch['attention_s']:.1f} s; chats "
                                                 f"{', '.join(f'{t:.1f}' for t in ch['chat_s'])} s"))
    width = max(len(r[0]) for r in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
