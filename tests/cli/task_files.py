"""Task files a user might write (good and broken), for CLI tests."""

from __future__ import annotations

from pathlib import Path

from stepsmith.tasks.suite import get_task

SILU = get_task("demo_map_silu").text.replace("test_name: demo_map_silu", "test_name: my_silu").replace(
    "group: demo-map", "group: mine")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def good(tmp_path: Path, name: str = "my_silu") -> Path:
    return write(tmp_path, name, SILU)


def typo_in_fn(tmp_path: Path) -> Path:
    """A typo in a fn body (`Dvalue`): the task's own impl fails, not a model's."""
    return write(tmp_path, "typo", SILU.replace("test_name: my_silu", "test_name: my_typo").replace(
        "return [input[0] * torch.sigmoid(input[0])]", "return [input[0] * torch.sigmoid(input[0]) * Dvalue]"))


def wrong_layout(tmp_path: Path) -> Path:
    """The reference produces the wrong shape (transposed)."""
    return write(tmp_path, "layout", SILU.replace("test_name: my_silu", "test_name: my_layout").replace(
        "torch.nn.functional.silu(input_data['E0'])", "torch.nn.functional.silu(input_data['E0']).T"))


def no_impl(tmp_path: Path) -> Path:
    text = SILU.replace("test_name: my_silu", "test_name: my_noimpl")
    return write(tmp_path, "noimpl", text[: text.index("impl: |-")])
