"""driver.report_imports: the plotting library imported on a thread while the hosts work.
Each case in a fresh interpreter: what is imported is process-wide state."""

import subprocess
import sys

IMPORTED = """
import sys
assert "matplotlib" not in sys.modules
from ray_tpu_profile.driver.report_imports import ReportImports
imports = ReportImports().start()
imports.wait()
import matplotlib
assert imports.error is None, imports.error
assert "matplotlib.pyplot" in sys.modules
print(matplotlib.get_backend())
"""

# A library that cannot be imported, for real: Python's own "import of None" (sys.modules
# holding None makes every import of the name raise ImportError).
FAILED = """
import sys
sys.modules["matplotlib"] = None
from ray_tpu_profile.driver.report_imports import ReportImports
imports = ReportImports().start()
imports.wait()
print(type(imports.error).__name__)
from ray_tpu_profile.analysis.plot import pyplot
try:
    pyplot()
except ImportError as e:
    print("again:", type(e).__name__)
"""


def run(code: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()


def test_the_thread_leaves_pyplot_imported_drawing_to_files():
    assert run(IMPORTED) == ["Agg"]


def test_a_failed_import_is_kept_and_raised_again_where_the_plot_imports():
    assert run(FAILED) == ["ModuleNotFoundError", "again: ModuleNotFoundError"]
