"""Connecting to Ray never hangs: a cluster address that does not answer fails in one line, in time.

Time bounds are loose (a loaded machine must not fail them): what they check is which way the
connection ended, a refusal at once or the --ray-timeout given, never Ray's minutes of retries.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from vprompt.errors import ConfigError
from vprompt.sweep import make_executor

pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # Ray

# Run in a child process: the ray.init left blocked behind the timeout would otherwise hold this
# process's Ray state while later tests start a local instance.
CONNECT = """
import sys, time
import ray  # imported before the clock starts: a slow import on a busy machine is not the wait measured
from vprompt.errors import ConfigError
from vprompt.sweep import make_executor
started = time.perf_counter()
try:
    make_executor(sys.argv[1], ray_timeout=float(sys.argv[2]))
except ConfigError as exc:
    print(f"{time.perf_counter() - started:.2f} {exc}")
    sys.exit(2)
"""


def free_port() -> int:
    """A port on which nothing listens: bound, read, closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_address_where_nothing_listens_fails_at_once_naming_it(monkeypatch):
    import ray

    def never(**_):
        raise AssertionError("ray.init was asked to join an address that refused the connection")

    monkeypatch.setattr(ray, "init", never)  # the refusal is found before Ray's own retries could start
    address = f"127.0.0.1:{free_port()}"
    timeout = 60
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=f"no Ray cluster answered at {address}: .*'ray start --head'") as caught:
        make_executor(address, ray_timeout=timeout)
    assert time.perf_counter() - started < timeout / 2  # did not wait for the timeout
    assert "\n" not in str(caught.value)
    assert "within" not in str(caught.value)  # the refusal's reason, not the timeout's


def test_a_server_that_accepts_but_never_speaks_ray_is_given_up_on_after_the_timeout():
    with socket.socket() as silent:  # the kernel completes the handshake; nobody ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        child = subprocess.run([sys.executable, "-c", CONNECT, address, "2"], capture_output=True, text=True,
                               timeout=120)
    assert child.returncode == 2, child.stderr
    seconds, message = child.stdout.strip().split(" ", 1)
    assert 2 <= float(seconds) < 2 * 10  # waited the timeout given, and gave up: Ray alone retries for minutes
    assert message.startswith(f"no Ray cluster answered at {address} within 2 s (")  # the 2 s passed is the one used
    assert "SIGTERM" not in child.stderr


def test_a_local_ray_that_cannot_start_says_why_in_one_line(monkeypatch):
    import ray

    def refuse(**_):
        raise RuntimeError("Failed to start the GCS server.\nSee the raylet logs for details.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    expected = ("^could not start a local Ray instance: Failed to start the GCS server. See the raylet logs for "
                "details.; pass --ray none to run without Ray$")
    with pytest.raises(ConfigError, match=expected):
        make_executor("local")


def test_a_sweep_joins_a_cluster_made_by_ray_start_with_token_authentication(tmp_path):
    """`ray start --head` as Ray ships it (token authentication on, the token in ~/.ray/auth_token),
    then a tiny sweep through --ray 127.0.0.1:PORT in a fresh process, and one from a machine without
    the token (another HOME) refused in one line; HOME is a temporary folder, so the token and Ray's
    files stay out of the user's."""
    import json
    import os
    from pathlib import Path

    from vprompt.data import write_synthetic_suite

    task = write_synthetic_suite(tmp_path / "suite", tasks=["digits"], image_size=16, test_size=20, progress=False)[0]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"HOME": str(tmp_path / "home")}
    ray_bin = Path(sys.executable).with_name("ray")
    # A token exists, as after any local ray.init() or as Ray's docs ask: `ray start` then turns authentication on.
    subprocess.run([str(ray_bin), "get-auth-token", "--generate"], env=env, capture_output=True, timeout=120, check=True)
    started = subprocess.run([str(ray_bin), "start", "--head", f"--port={port}", "--num-cpus=1",
                              "--include-dashboard=false", "--disable-usage-stats"],
                             env=env, capture_output=True, text=True, timeout=180)
    try:
        assert started.returncode == 0, started.stderr[-2000:]
        assert (tmp_path / "home" / ".ray" / "auth_token").is_file()  # Ray's own token mechanism is on
        command = [str(Path(sys.executable).with_name("vprompt")), "sweep", "--data", str(task), "--out",
                   str(tmp_path / "sweep"), "--model", "vit_tiny_patch16_224", "--init-seed", "0", "--model-arg",
                   "img_size=16", "patch_size=4", "embed_dim=32", "depth=2", "num_heads=2", "--methods", "linear",
                   "--seeds", "0", "--base-lrs", "0.1", "--weight-decays", "0", "--epochs", "1", "--ray",
                   f"127.0.0.1:{port}", "--no-progress"]
        swept = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert swept.returncode == 0, swept.stderr[-3000:]
        rows = json.loads((tmp_path / "sweep" / "results.json").read_text())
        assert [row["method"] for row in rows] == ["linear"] and 0 <= rows[0]["test_acc"] <= 1
        assert "gcs_client" not in swept.stderr and "Unauthenticated" not in swept.stderr  # Ray's C++ lines stay off
        assert "Token authentication is enabled" in started.stderr + started.stdout
        stranger = subprocess.run(command[:command.index("--out") + 1] + [str(tmp_path / "other")]
                                  + command[command.index("--out") + 2:] + ["--ray-timeout", "10"],
                                  env=env | {"HOME": str(tmp_path / "elsewhere")}, capture_output=True, text=True,
                                  timeout=300)
        assert stranger.returncode == 2 and stranger.stderr.count("\n") == 1, stranger.stderr[-2000:]
        assert "uses token authentication and refused this machine's token" in stranger.stderr
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], env=env, capture_output=True, timeout=120)
