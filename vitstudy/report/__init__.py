"""The report: what notebooks call to save their figures and tables (``from vitstudy import report``).

The runner that executes the numbered notebooks and publishes their files is :mod:`vitstudy.report.runner`
(``python -m vitstudy report``); it is not imported here, so a notebook never loads papermill.
"""

from .outputs import check_name, save_figure, save_raw, save_table

__all__ = ["check_name", "save_figure", "save_raw", "save_table"]
