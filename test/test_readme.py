"""The README's set-up commands are the ones CI runs."""
import re

from conftest import REPO_ROOT


def readme_commands() -> dict[str, str]:
    text = (REPO_ROOT / "README.md").read_text()
    return dict(re.findall(r"<!-- (main-job|tests) -->\n```bash\n(.+?)\n```", text))


def test_ci_runs_the_readme_test_command():
    commands = readme_commands()
    assert set(commands) == {"main-job", "tests"}
    ci_script = (REPO_ROOT / ".ci" / "run").read_text()
    assert commands["tests"] in ci_script.splitlines()
