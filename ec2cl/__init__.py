"""ec2cl: the command-line client of EC2 Creator Local. It talks to the REST API over HTTP only (it imports
nothing from app/): get a box up, ssh into it by name, take it down."""

__version__ = "0.1.0"
