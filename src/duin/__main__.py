"""``python -m duin ...`` (and ``torchrun ... -m duin ...``) runs the ``duin`` command."""

from duin.cli import main

if __name__ == "__main__":
    main()
