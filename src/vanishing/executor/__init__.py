"""The one way runs are executed: planning, this process, a pool of children, Ray."""
