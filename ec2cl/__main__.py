"""`python -m ec2cl`: the same as the `ec2cl` command."""

from ec2cl.cli import main

main()
