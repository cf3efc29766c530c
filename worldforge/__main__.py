"""`python -m worldforge`: the same command line as `worldforge`."""

from worldforge.cli import app

if __name__ == "__main__":
    app(prog_name="worldforge")
