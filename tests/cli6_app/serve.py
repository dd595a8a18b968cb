"""`mycelium-mono run serve.py TABLE DISHES...`, the script form of kitchen.main."""
import sys

from kitchen.main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv))
