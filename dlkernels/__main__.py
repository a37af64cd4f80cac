"""`python -m dlkernels info`: what this installation can run."""
import argparse

from dlkernels.info import format_info


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m dlkernels")
    parser.add_argument("command", choices=["info"], nargs="?", default="info")
    parser.parse_args()
    print(format_info())


if __name__ == "__main__":
    main()
