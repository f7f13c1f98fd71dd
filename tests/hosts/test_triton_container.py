"""testinfra checks of Triton's `container` runtime: the pinned image under Docker.

Which hosts: the GPU hosts whose Triton runs in a container (see conftest.py).
"""


def _inspect(host, what: str) -> str:
    with host.sudo():
        return host.check_output(f"docker inspect -f '{what}' tritonserver").strip()


def test_runs_the_pinned_image_from_disk(host):
    unit = host.file("/etc/systemd/system/tritonserver.service").content_string
    assert "docker pull" not in unit, "the unit pulls at start: no Triton without a registry"
    assert _inspect(host, "{{.State.Running}}") == "true"
    image = _inspect(host, "{{.Image}}")
    assert image in unit, f"the container runs {image}, not the unit's image"


def test_model_environment_is_the_images_python(host):
    """The models' packages were installed by the image's own Python, for its version."""
    with host.sudo():
        built_for = host.check_output("cat /opt/triton/venv/python-version").strip()
        image = _inspect(host, "{{.Image}}")
        runs = host.check_output(
            "docker run --rm --entrypoint python3 %s -c "
            "'import sys; print(\"%%d.%%d\" %% sys.version_info[:2])'",
            image,
        ).strip()
    assert built_for == runs, f"environment built for {built_for}, the image runs {runs}"


def test_model_environment_is_mounted_read_only(host):
    mounts = _inspect(host, "{{range .Mounts}}{{.Destination}} {{.RW}};{{end}}")
    assert "/models false" in mounts, mounts
    assert "/opt/oceanid/env false" in mounts, mounts
