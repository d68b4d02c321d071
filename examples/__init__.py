"""Runnable examples and the smart-city demo: applications of secagg, in the source checkout only
(never installed). They may import anything: the library, the client and the server side."""
