"""oceanid.triton_repo: model folders checked and config.pbtxt rendered per host, as real text."""

from __future__ import annotations

from pathlib import Path

import pytest

from oceanid.triton_repo import (
    model_requirements,
    render_config,
    render_repository,
    top_level_fields,
    validate_model_dir,
)

REPO = Path(__file__).resolve().parents[2] / "triton-models"

TEMPLATE = """\
# a model
name: "m"
backend: "python"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { count: 2 kind: KIND_GPU gpus: [ 3 ] } ]  # hand-pinned, to be replaced
parameters {
  key: "granite_model_dir"
  value: { string_value: "" }
}
parameters { key: "other" value: { string_value: "keep {me}" } }
"""


def make_model(root: Path, folder: str, config: str, versions: tuple[str, ...] = ("1",)) -> Path:
    model = root / folder
    model.mkdir(parents=True)
    (model / "config.pbtxt").write_text(config)
    for version in versions:
        (model / version).mkdir()
        (model / version / "model.py").write_text("# model\n")
    return model


def test_shipped_models_are_valid() -> None:
    assert validate_model_dir(REPO / "docling_granite_python") == []


def test_folder_name_must_equal_config_name(tmp_path: Path) -> None:
    model = make_model(tmp_path, "renamed", 'name: "m"\nbackend: "python"\n')
    assert validate_model_dir(model) == [
        f"model 'renamed': {model}/config.pbtxt has name: 'm'; "
        "Triton needs it to equal the folder name 'renamed'"
    ]


def test_backend_or_platform_required(tmp_path: Path) -> None:
    model = make_model(tmp_path, "m", 'name: "m"\nmax_batch_size: 0\n')
    assert validate_model_dir(model) == [
        f"model 'm': {model}/config.pbtxt sets neither backend nor platform"
    ]
    platform = make_model(tmp_path, "p", 'name: "p"\nplatform: "onnxruntime_onnx"\n')
    assert validate_model_dir(platform) == []


def test_version_folder_required(tmp_path: Path) -> None:
    model = make_model(tmp_path, "m", 'name: "m"\nbackend: "python"\n', versions=("latest",))
    assert validate_model_dir(model) == [
        f"model 'm': {model} has no numbered version folder (such as {model}/1)"
    ]


def test_missing_config(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    assert validate_model_dir(tmp_path / "m") == [
        f"model 'm': {tmp_path}/m/config.pbtxt is missing"
    ]


def test_unparsable_config(tmp_path: Path) -> None:
    model = make_model(tmp_path, "m", 'name: "m"\nbackend: "python"\ninput [ { name: "x" }\n')
    assert validate_model_dir(model) == [
        f"model 'm': {model}/config.pbtxt does not parse: config.pbtxt: unclosed '['"
    ]


def test_render_cpu_replaces_instance_group_and_keeps_the_rest() -> None:
    rendered = render_config(TEMPLATE, instance_kind="KIND_CPU", gpus=None, parameters={})
    assert rendered == (
        "# a model\n"
        'name: "m"\n'
        'backend: "python"\n'
        "max_batch_size: 0\n"
        'input [ { name: "x" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
        "# hand-pinned, to be replaced\n"
        "parameters {\n"
        '  key: "granite_model_dir"\n'
        '  value: { string_value: "" }\n'
        "}\n"
        'parameters { key: "other" value: { string_value: "keep {me}" } }\n'
        "\n"
        "instance_group [\n"
        "  {\n"
        "    count: 1\n"
        "    kind: KIND_CPU\n"
        "  }\n"
        "]\n"
    )


def test_render_one_gpu() -> None:
    rendered = render_config(TEMPLATE, instance_kind="KIND_GPU", gpus=[0], parameters={})
    assert "gpus: [ 3 ]" not in rendered
    assert rendered.endswith(
        "instance_group [\n  {\n    count: 1\n    kind: KIND_GPU\n    gpus: [ 0 ]\n  }\n]\n"
    )
    assert rendered.count("instance_group") == 1


def test_render_two_gpus_gives_one_group_listing_both() -> None:
    rendered = render_config(TEMPLATE, instance_kind="KIND_GPU", gpus=[0, 1], parameters={})
    assert rendered.endswith(
        "instance_group [\n  {\n    count: 1\n    kind: KIND_GPU\n    gpus: [ 0, 1 ]\n  }\n]\n"
    )


def test_render_is_idempotent() -> None:
    once = render_config(TEMPLATE, instance_kind="KIND_GPU", gpus=[1], parameters={"other": "x"})
    twice = render_config(once, instance_kind="KIND_GPU", gpus=[1], parameters={"other": "x"})
    assert twice == once


def test_render_fills_parameters_with_escaping() -> None:
    rendered = render_config(
        TEMPLATE,
        instance_kind="KIND_CPU",
        gpus=None,
        parameters={"granite_model_dir": '/opt/models/granite "258M"'},
    )
    assert '  value: { string_value: "/opt/models/granite \\"258M\\"" }\n' in rendered
    assert 'string_value: "keep {me}"' in rendered


def test_render_refuses_undeclared_parameter() -> None:
    with pytest.raises(ValueError, match=r"declares no parameter \['granit_model_dir'\]"):
        render_config(
            TEMPLATE, instance_kind="KIND_CPU", gpus=None, parameters={"granit_model_dir": "/x"}
        )


@pytest.mark.parametrize(
    ("kind", "gpus", "message"),
    [
        ("KIND_TPU", None, "instance_kind must be one of"),
        ("KIND_CPU", [0], "takes no gpus"),
        ("KIND_GPU", [-1], "must be GPU indexes"),
    ],
)
def test_render_refuses_bad_devices(kind: str, gpus: list[int] | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_config(TEMPLATE, instance_kind=kind, gpus=gpus, parameters={})


def test_rendered_shipped_config_parses_as_a_model_config() -> None:
    """The rendered text is valid protobuf text format for Triton's own ModelConfig schema."""
    text_format = pytest.importorskip("google.protobuf.text_format")
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    rendered = render_config(
        (REPO / "docling_granite_python" / "config.pbtxt").read_text(),
        instance_kind="KIND_GPU",
        gpus=[0, 1],
        parameters={"granite_model_dir": "/opt/granite"},
    )
    config = text_format.Parse(rendered, model_config_pb2.ModelConfig())
    assert [group.gpus for group in config.instance_group] == [[0, 1]]
    assert config.parameters["granite_model_dir"].string_value == "/opt/granite"
    assert [i.name for i in config.input] == ["pdf_data", "prompt", "text"]
    assert config.max_batch_size > 1  # batched: the ML-backend adapter sends [B, 1] per request


def test_top_level_fields_skip_braces_in_strings_and_comments() -> None:
    text = 'a: "}{"  # } [\nb { c: "]" }\nd: 0\n'
    assert [(f.name, text[f.start : f.end]) for f in top_level_fields(text)] == [
        ("a", 'a: "}{"'),
        ("b", 'b { c: "]" }'),
        ("d", "d: 0"),
    ]


def test_render_repository_file_set(tmp_path: Path) -> None:
    model = make_model(tmp_path, "m", TEMPLATE)
    (model / "1" / "__pycache__").mkdir()
    (model / "1" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    (model / "requirements.txt").write_text("pypdf==7.1.1\n")
    (tmp_path / "notes").mkdir()  # no config.pbtxt: not a model
    files = render_repository(
        tmp_path,
        instance_kind="KIND_GPU",
        gpus=[0],
        parameters_by_model={"m": {"granite_model_dir": "/g"}},
    )
    assert sorted(files) == ["m/1/model.py", "m/config.pbtxt", "m/requirements.txt"]
    assert files["m/1/model.py"] == b"# model\n"
    assert files["m/config.pbtxt"].decode() == render_config(
        TEMPLATE, instance_kind="KIND_GPU", gpus=[0], parameters={"granite_model_dir": "/g"}
    )


def test_render_repository_lists_every_problem(tmp_path: Path) -> None:
    make_model(tmp_path, "bad", 'name: "other"\nbackend: "python"\n')
    with pytest.raises(ValueError) as raised:
        render_repository(
            tmp_path, instance_kind="KIND_CPU", gpus=None, parameters_by_model={"ghost": {}}
        )
    message = str(raised.value)
    assert "has name: 'other'" in message
    assert "parameters given for model 'ghost'" in message


def test_model_requirements() -> None:
    requirements = model_requirements(REPO)
    assert requirements["docling_granite_python"] == ["numpy>=1.26,<2", "pypdf==7.1.1"]


@pytest.mark.parametrize("gpus", [None, []])
def test_gpu_without_indexes_means_every_gpu(gpus):
    text = render_config(TEMPLATE, instance_kind="KIND_GPU", gpus=gpus, parameters={})
    group = text[text.index("instance_group") :]
    assert "kind: KIND_GPU" in group
    assert "gpus:" not in group
