"""Scale: more than one process, and the teacher out of the loop. torchrun / DDP primitives (`distributed`:
which process am I, shared steps, sharded evaluation), a run as a torchrun job, and the teacher-logit cache.
"""
