import sys
from pathlib import Path

# tests/ has no __init__.py files: put this folder on sys.path so `from study_fixture import make_study` works
sys.path.insert(0, str(Path(__file__).resolve().parent))
