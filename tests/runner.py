"""The one way the tests run the command line: ``run(["train", ...])``."""

from click.testing import CliRunner

from kerasgen_cli.main import main


def run(args, **kwargs):
    """``kerasgen ARGS`` through Click's test runner; exceptions propagate (a traceback a
    user would see fails the test). ``kwargs``: ``CliRunner.invoke``'s (``input=``...)."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kwargs)
