"""Results: every finished model of a run evaluated and measured into one table (compare), its files and the
sentences under it (table, files, analysis), the qualitative figures, and every run at a glance (listing).
"""

from . import analysis, compare, files, qualitative, table
from .listing import overview

__all__ = ["analysis", "compare", "files", "overview", "qualitative", "table"]
