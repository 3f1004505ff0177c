"""A worker of the managed pools of the healthy corpus (tests/corpus.py): it answers
`healthy` on the listening socket its manager passed it (the fd number is argv[1]):
circus's `$(circus.sockets.<name>)`, or fd 0 under supervisord's fcgi-program."""

import socket
import sys

with socket.socket(fileno=int(sys.argv[1])) as listener:
    listener.setblocking(True)  # circus passes it non-blocking, shared by every worker
    listener.settimeout(None)
    while True:
        connection, _ = listener.accept()
        with connection:
            connection.recv(1024)
            connection.sendall(b"HTTP/1.0 200 OK\r\n\r\nhealthy\n")
