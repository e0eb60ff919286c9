"""`python -m imgrank`: the same as the `imgrank` command."""

from imgrank.cli import cli

if __name__ == "__main__":
    cli(prog_name="imgrank")
