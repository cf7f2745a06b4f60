"""Loader: valid files, and each malformed case names file, line and field."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tasks_testutil import VALID, line_containing

from stepsmith.step import Buffer, Dim, Multihot, Scalar, TupleType
from stepsmith.tasks import TaskFormatError, load_task
from stepsmith.tasks.dtypes import DTypeSyntaxError, dtype_symbols, parse_dim, parse_dtype


def test_valid_task_loads_with_fields(write_task):
    path = write_task(VALID)
    task = load_task(path)
    assert task.name == "tiny_scale_sum"
    assert task.group == "testing"
    assert task.source_path == path
    assert task.input_names == ["E0"] and task.output_names == ["O"]
    assert "step.Accum(fn=fn_sum, b=1)" in task.impl
    assert task.symbols == ["K", "M"]
    assert task.line_of("fns[1].init") == line_containing(VALID, "init: [0]")
    assert task.line_of(("outputs", 0, "data_transform")) == line_containing(VALID, "data_transform")


def test_load_from_text_and_group_defaults_to_folder(tmp_path):
    task = load_task(VALID)
    assert task.source_path is None and task.name == "tiny_scale_sum"
    folder = tmp_path / "mygroup"
    folder.mkdir()
    (folder / "t.yaml").write_text(VALID.replace("group: testing\n", ""))
    assert load_task(folder / "t.yaml").group == "mygroup"


def _error(write_task, text: str) -> TaskFormatError:
    path = write_task(text)
    with pytest.raises(TaskFormatError) as info:
        load_task(path)
    err = info.value
    assert str(path) in str(err)
    return err


def test_bad_yaml_syntax_reports_its_line(write_task):
    text = VALID.replace("    dims: [K, M]\n", "    dims: [K, M\n")
    err = _error(write_task, text)
    assert "YAML syntax" in str(err) and "flow sequence" in str(err)
    assert f"started on line {line_containing(text, 'dims: [K, M')}" in str(err)
    # the parser notices the unclosed flow sequence at the next line
    assert err.line in (line_containing(text, "dims: [K, M"), line_containing(text, "data_gen"))
    assert f":{err.line}:" in str(err)


def test_unknown_dtype_names_field_line_and_value(write_task):
    text = VALID.replace("    input_dtype: fp32\n    output_dtype: fp32\n    apply: |-\n      return [input[0] * 2]",
                         "    input_dtype: fp33\n    output_dtype: fp32\n    apply: |-\n      return [input[0] * 2]")
    err = _error(write_task, text)
    assert err.field == "fns[0].input_dtype"
    assert err.line == line_containing(text, "input_dtype: fp33")
    assert "fp33" in str(err) and "Buffer(" in str(err)
    assert f":{err.line}: field 'fns[0].input_dtype'" in str(err)


def test_unknown_dtype_inside_buffer(write_task):
    text = VALID.replace("    dtype: fp32\n    dims: [K, M]", '    dtype: "Buffer(fp16, [D])"\n    dims: [K, M]')
    err = _error(write_task, text)
    assert err.field == "inputs[0].dtype" and "'fp16'" in str(err)
    assert err.line == line_containing(text, "Buffer(fp16")


def test_fn_used_in_impl_but_not_defined(write_task):
    text = VALID.replace("step.Accum(fn=fn_sum", "step.Accum(fn=fn_total")
    err = _error(write_task, text)
    assert err.field == "impl"
    assert err.line == line_containing(text, "fn_total")
    assert "fn_total" in str(err) and "fn_double, fn_sum" in str(err)


def test_undefined_name_in_impl(write_task):
    text = VALID.replace("return E2", "return E9")
    err = _error(write_task, text)
    assert err.line == line_containing(text, "return E9") and "'E9'" in str(err)


def test_output_without_data_transform(write_task):
    text = VALID.replace("    data_transform:\n      - |-\n        x = input_data['E0'] * 2\n        x.sum(-1)\n", "")
    err = _error(write_task, text)
    assert err.field == "outputs[0].data_transform"
    assert "missing required field 'data_transform'" in str(err)
    assert err.line == line_containing(text, "- name: O")


@pytest.mark.parametrize("field", ["test_name", "outputs", "inputs"])
def test_missing_required_top_level_field(write_task, field):
    lines = VALID.splitlines(keepends=True)
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"{field}:"))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith((" ", "-"))), len(lines))
    text = "".join(lines[:start] + lines[end:])
    err = _error(write_task, text)
    assert f"missing required field '{field}'" in str(err)
    assert err.field == field and err.line == 1


def test_missing_field_inside_fn(write_task):
    text = VALID.replace("    func_name: fn_double\n", "")
    err = _error(write_task, text)
    assert err.field == "fns[0].func_name" and err.line == line_containing(text, "name: Double")


def test_unknown_field_is_reported(write_task):
    text = VALID.replace("    data_gen: torch.randn", "    data_gen: torch.randn\n    dtpye: fp32")
    err = _error(write_task, text)
    assert "unknown field 'dtpye' (did you mean 'dtype'?)" in str(err)
    assert err.line == line_containing(text, "dtpye") and "allowed here: name, dtype, dims" in str(err)


def test_init_length_must_match_output_fields(write_task):
    text = VALID.replace("init: [0]", "init: [0, 0]")
    err = _error(write_task, text)
    assert err.field == "fns[1].init" and "1 output field" in str(err)
    assert err.line == line_containing(text, "init: [0, 0]")


def test_zeros_init_needs_buffer_output(write_task):
    err = _error(write_task, VALID.replace("init: [0]", "init: [zeros]"))
    assert err.field == "fns[1].init[0]" and "Buffer" in str(err)


def test_stateful_body_without_init(write_task):
    text = VALID.replace("    init: [0]\n", "")
    err = _error(write_task, text)
    assert err.field == "fns[1].apply" and "init" in str(err)


def test_syntax_error_in_apply_points_at_body_line(write_task):
    text = VALID.replace("return [input[0] * 2]", "x = (\n      return [input[0] * 2]")
    err = _error(write_task, text)
    assert err.field == "fns[0].apply" and "syntax error" in str(err)
    assert line_containing(text, "x = (") <= err.line <= line_containing(text, "x = (") + 1


def test_data_transform_count_must_match_tuple_fields(write_task):
    text = VALID.replace("  - name: O\n    dtype: fp32", "  - name: O\n    dtype: [fp32, fp32]")
    err = _error(write_task, text)
    assert err.field == "outputs[0].data_transform" and "2 field(s)" in str(err)


def test_duplicate_key(write_task):
    text = VALID.replace("group: testing\n", "group: testing\ngroup: other\n")
    err = _error(write_task, text)
    assert "duplicate key 'group'" in str(err) and err.line == line_containing(text, "group: other")


def test_unbound_symbol(write_task):
    text = VALID.replace("dims: [K, M]", "dims: [L, M]").replace("input_data['E0'] * 2", "input_data['E0'] * 2")
    text = text.replace("  - name: O\n    dtype: fp32\n    dims: [M]", "  - name: O\n    dtype: fp32\n    dims: [M]")
    err = _error(write_task, text)
    assert "'L' has no value" in str(err) and err.field == "inputs[0].dims"
    assert err.line == line_containing(text, "dims: [L, M]")


def test_snippet_must_end_with_expression(write_task):
    text = VALID.replace("        x.sum(-1)\n", "        y = x.sum(-1)\n")
    err = _error(write_task, text)
    assert err.field == "outputs[0].data_transform[0]" and "expression" in str(err)
    assert err.line == line_containing(text, "y = x.sum(-1)")


def test_empty_and_non_mapping_files(write_task):
    assert "empty" in str(_error(write_task, ""))
    assert "mapping" in str(_error(write_task, "- a\n- b\n"))


def test_dtype_parser_collapses_buffers_and_reads_multihot():
    """A task's dtypes are the language's own types (one set of types, no task-side copies)."""
    t = parse_dtype("Buffer(Buffer(fp32, [D]), [N*K, 2])")
    assert isinstance(t, Buffer) and isinstance(t.elem, Scalar)
    assert [str(d) for d in t.shape] == ["D", "N*K", "2"]
    assert t.shape[1] == Dim.sym("N") * Dim.sym("K")
    m = parse_dtype("Multihot(fp32, E)")
    assert isinstance(m, Multihot) and str(m) == "Multihot(fp32, E)"
    pair = parse_dtype(["fp32", "Buffer(fp32, [D])"])
    assert pair == TupleType((Scalar(), Buffer(Scalar(), (Dim.sym("D"),))))
    assert dtype_symbols(parse_dtype("Buffer(Multihot(fp32, E), [N*K])")) == ["N", "K", "E"]
    assert parse_dim("N*K") == Dim.sym("N") * Dim.sym("K") and parse_dim(3) == Dim.const(3)


@pytest.mark.parametrize(("text", "message"), [
    ("fp16", "a task's numbers are fp32"),
    ("Buffer(fp32, [D/2])", "a product of size symbols and integers"),
    ("Buffer(fp32, [0])", "a literal dimension must be >= 1"),
    ("Multihot(int32, E)", "a task's numbers are fp32"),
])
def test_dtype_parser_keeps_the_task_file_subset(text: str, message: str) -> None:
    with pytest.raises(DTypeSyntaxError, match=message):
        parse_dtype(text)


def test_binding_values_are_validated(write_task):
    err = _error(write_task, VALID.replace("group: testing\n", "group: testing\nbindings: {M: 0}\n"))
    assert "'M' must be a positive integer, found 0" in str(err) and err.field == "bindings"
    text = VALID.replace("group: testing\n", "group: testing\nbindings:\n  - {M: two}\n")
    err = _error(write_task, text)
    assert err.field == "bindings[0].M" and err.line == line_containing(text, "{M: two}")


_MUTATIONS = st.sampled_from(["delete", "duplicate", "char", "dedent", "indent"])


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(kind=_MUTATIONS, line=st.integers(0, 200), pos=st.integers(0, 80),
       char=st.sampled_from(list(":-[]{}'\"|>#&*!% \tx0")))
def test_mutated_files_load_or_raise_task_format_error(kind, line, pos, char):
    """Whatever happens to a file, the loader answers with a TaskFormatError, never a crash."""
    lines = VALID.splitlines(keepends=True)
    i = line % len(lines)
    if kind == "delete":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    elif kind == "char":
        j = pos % max(len(lines[i]), 1)
        lines[i] = lines[i][:j] + char + lines[i][j + 1:]
    elif kind == "dedent":
        lines[i] = lines[i].lstrip(" ")
    else:
        lines[i] = "  " + lines[i]
    try:
        load_task("".join(lines))
    except TaskFormatError as exc:
        assert exc.line is None or exc.line >= 1
        assert str(exc).startswith("<text>")


def test_paths_directories_and_one_line_documents(tmp_path):
    with pytest.raises(TaskFormatError, match="cannot read task file"):
        load_task(str(tmp_path))  # a directory
    with pytest.raises(TaskFormatError, match="cannot read task file"):
        load_task(str(tmp_path / "missing.yaml"))
    with pytest.raises(TaskFormatError, match="missing required field 'outputs'"):
        load_task("{test_name: x, inputs: [{name: " + "A" * 300 + ", dtype: fp32, dims: [M], "
                  "data_gen: torch.rand}]}")  # one long line is text, not a file name
    with pytest.raises(TypeError, match="path or YAML text"):
        load_task(None)  # type: ignore[arg-type]
