"""In a notebook: the %archive, %serve, %predict and %bench magics, the kernel's session, rich
output and widgets."""
