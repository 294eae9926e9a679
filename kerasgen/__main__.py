"""``python -m kerasgen``: the same as the ``kerasgen`` command."""

from kerasgen_cli.main import run

if __name__ == "__main__":
    run()
