"""PDE data: meshes and geometry, scikit-fem solvers (Darcy, heat, elasticity, channel flow), the sample file format
and the ``linmix-physics synth`` tool that writes datasets of solved samples."""
