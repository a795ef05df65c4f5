"""Report: the notebooks run in order with papermill (runner), merged into one offline report.html with
formulas as MathML (build, mathml), printed to PDF and checked in headless Chromium (browser); docs/ regenerated.
"""
