"""``python -m rl_lightning`` is the ``rl-lightning`` command."""

from rl_lightning.cli import main

if __name__ == "__main__":
    main()
