"""The house rules the code keeps: a thin CLI over the public API, the model family asked
of one registry, small modules, formats that say what they are, errors that name the
parameter."""

import ast
import json
import pathlib
import re

import pytest
from runner import run

import kerasgen
from kerasgen.errors import NewerFormatError, ParameterError

ROOT = pathlib.Path(__file__).parent.parent
LIBRARY = sorted((ROOT / "kerasgen").glob("*.py"))
CLI = sorted((ROOT / "cli").glob("*.py"))
LIMITS = {"module": 600, "function": 80, "class": 200}  # lines, docstrings included


def parsed(path):
    return ast.parse(path.read_text(encoding="utf-8"))


def test_the_cli_imports_only_the_public_api():
    reached = set()
    for path in CLI:
        for node in ast.walk(parsed(path)):
            if isinstance(node, ast.Import):
                reached |= {a.name for a in node.names if a.name.startswith("kerasgen")}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kerasgen"):
                reached.add(node.module)
    library = {m for m in reached if not m.startswith("kerasgen_cli")}
    assert library == {"kerasgen", "kerasgen.errors"}


def test_only_the_registry_compares_family_names():
    names = set(kerasgen.FAMILIES)
    found = []
    for path in LIBRARY + CLI:
        if path.name == "model.py":  # the registry
            continue
        for node in ast.walk(parsed(path)):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            constants = [
                c.value
                for side in sides
                for c in ast.walk(side)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            ]
            if names & set(constants):
                found.append(f"{path.name}:{node.lineno}")
    assert found == []


def test_modules_functions_and_classes_stay_small():
    over = []
    for path in LIBRARY + CLI:
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > LIMITS["module"]:
            over.append(f"{path.name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            kind = {ast.FunctionDef: "function", ast.AsyncFunctionDef: "function"}.get(
                type(node), "class" if isinstance(node, ast.ClassDef) else None
            )
            if kind and node.end_lineno - node.lineno + 1 > LIMITS[kind]:
                over.append(f"{path.name}:{node.name}: {node.end_lineno - node.lineno + 1}")
    assert over == []


def test_a_run_records_its_format_and_a_newer_one_is_refused(own_run):
    _, save = own_run
    config = json.loads((save / "config.json").read_text())
    assert config["format"] == kerasgen.rundir.RUN_FORMAT
    assert config["kerasgen_version"] == kerasgen.__version__
    config["format"] = kerasgen.rundir.RUN_FORMAT + 1
    (save / "config.json").write_text(json.dumps(config))
    with pytest.raises(NewerFormatError, match="made by a newer kerasgen"):
        kerasgen.load(str(save))
    r = run(["sample", "--save_dir", save, "-n", "5"])
    assert r.exit_code == 1
    assert "upgrade kerasgen" in r.output and "Traceback" not in r.output


@pytest.mark.slow  # samples for two measures twice; test_api checks evaluate's
# JSON against the API's dict in the default run
def test_evaluate_json_is_what_the_api_returns(trained_run):
    _, save = trained_run
    options = {"python_syntax": 3, "real_words": 2, "n": 60, "seed": 4, "temperature": 0.8}
    api = kerasgen.load(str(save)).evaluate(**options)
    flags = [x for k, v in options.items() for x in (f"--{k}" if k != "n" else "-n", v)]
    r = run(["evaluate", "--save_dir", save, "--json", *flags])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == json.loads(json.dumps(api))
    assert api["python_syntax"]["samples"] == 3 and api["real_words"]["samples"] == 2


def test_bad_values_name_the_parameter_in_the_api_and_the_flag_in_the_cli(trained_run, tmp_path):
    data, save = trained_run
    with pytest.raises(ParameterError) as e:
        kerasgen.train(str(data), save_dir=str(tmp_path / "x"), batch_size=0)
    assert e.value.param == "batch_size" and str(e.value).startswith("batch_size must")
    assert "--" not in str(e.value)
    r = run(["train", "--data_dir", data, "--save_dir", tmp_path / "x", "--batch_size", "0"])
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1] == "Error: --batch_size must be at least 1, got 0"
    r = run(["evaluate", "--save_dir", save, "--text", tmp_path / "none.txt"])
    assert r.exit_code == 2 and "--text" in r.output and "text_file" not in r.output
    with pytest.raises(ParameterError, match=r"^temperature must be > 0"):
        kerasgen.load(str(save)).generate(5, temperature=0)


def test_the_layout_in_the_docs_lists_every_module_and_none_imports_one_above_it():
    section = (ROOT / "docs" / "usage.md").read_text(encoding="utf-8").split("## Layout")[1]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    rank = {name: i for i, row in enumerate(rows) for name in re.findall(r"`(\w+)`", row)}
    modules = {p.stem for p in LIBRARY} - {"__main__"}
    assert set(rank) == modules
    upward = []
    for path in LIBRARY:
        if path.stem in ("__init__", "__main__"):
            continue
        for node in ast.walk(parsed(path)):
            names = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kerasgen."):
                names = [node.module.split(".")[1]]
            elif isinstance(node, ast.ImportFrom) and node.module == "kerasgen":
                names = [a.name for a in node.names if a.name in modules]
            upward += [f"{path.stem} -> {n}" for n in names if rank[n] > rank[path.stem]]
    assert upward == []


def test_the_cli_words_a_library_message_in_flags_but_leaves_paths_alone(tmp_path):
    folder = tmp_path / "save_dir" / "text_file.txt"
    r = run(["sample", "--save_dir", folder])
    assert r.exit_code == 2
    line = r.output.strip().splitlines()[-1]
    assert f"run folder {folder} does not exist" in line  # the path as given
    assert line.endswith("or pass the right --save_dir") and "----" not in line
    r = run(["corpus", "python", tmp_path, "--comments", "--reformat", "--out", tmp_path / "o"])
    assert r.exit_code == 2 and "pass --no_comments, or --no_reformat" in r.output
