"""``python -m kerasgen``: the same as the ``kerasgen`` command."""

from kerasgen_cli.main import main

if __name__ == "__main__":
    main()
