"""The README's commands and what CI runs stay the same."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_command_ci_runs_is_one_the_readme_gives():
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    readme_lines = {line.strip() for block in blocks for line in block.splitlines()}
    ci_commands = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()
                   if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci_commands and all(command in readme_lines for command in ci_commands), ci_commands
    assert ci_commands[-1] == "python -m pytest --all"  # CI runs the slow tests too
