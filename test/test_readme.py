"""The README's set-up commands are the ones CI runs."""
import re


def test_ci_runs_the_readme_test_command(repo_root):
    text = (repo_root / "README.md").read_text()
    commands = dict(re.findall(r"<!-- (main-job|tests) -->\n```bash\n(.+?)\n```", text))
    assert set(commands) == {"main-job", "tests"}
    ci_script = (repo_root / ".ci" / "run").read_text()
    assert commands["tests"] in ci_script.splitlines()
