"""Core: what every layer uses. The one error type a user sees (UserError), project-root paths, the device,
seeding and mixed precision, atomic checkpoint files, and progress lines for long work.
"""
