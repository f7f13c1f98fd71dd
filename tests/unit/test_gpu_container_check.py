"""The GPU check's container variant, as far as this machine can run it: no Docker with NVIDIA's
runtime here, so it must say so in one FAIL line and exit non-zero, having built nothing; and its
offline environment build is the deploy's own command with the bundle mounted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from operations.triton import image_build_command

REPO = Path(__file__).resolve().parents[2]


def test_without_nvidias_runtime_it_fails_in_one_line(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text('#!/bin/sh\necho "$*" >> "$LOG"\necho \'{"runc":{"path":"runc"}}\'\n')
    docker.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(tmp_path / "log")}
    done = subprocess.run(
        [sys.executable, "-m", "tests.gpu.container_check", str(tmp_path / "work"),
         "--image", "sha256:" + "a" * 64, "--bundle", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("FAIL: Docker has NVIDIA's runtime"), done.stdout
    assert (tmp_path / "log").read_text().splitlines() == ["info --format {{json .Runtimes}}"]


def test_the_offline_build_is_the_deploys_command_with_the_bundle_mounted() -> None:
    extra = ("-v", "/b:/bundle:ro", "-e", "PIP_NO_INDEX=1")
    plain = str(image_build_command("/e", "img").get_raw_value())
    offline = str(image_build_command("/e", "img", extra).get_raw_value())
    assert offline == plain.replace(" img sh -c", " -v /b:/bundle:ro -e PIP_NO_INDEX=1 img sh -c")
