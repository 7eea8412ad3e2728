"""Drives paramiko through a Warren proxy for TestClientParamiko.

    python3 paramiko_client.py session PROXY_HOST PROXY_PORT USER KEY KNOWN_HOSTS LOGIN NODE TCP SRC REMOTE_DIR
    python3 paramiko_client.py connect PROXY_HOST PROXY_PORT USER KEY KNOWN_HOSTS

Host keys come only from KNOWN_HOSTS (the pinned lines `warren known-hosts`
writes), with RejectPolicy: an unknown or different key is refused. The
user authenticates with KEY and its certificate KEY-cert.pub.

"session" lists resources on the proxy (`ls`), talks to the tcp resource TCP
over a direct-tcpip channel, opens a direct-tcpip channel to NODE port 22
and, over it, a second SSH connection (the `sock=` of a second SSHClient)
that runs a command and copies SRC to REMOTE_DIR/up.bin and back with SFTP.
"connect" only connects to the proxy. Both print one JSON object on stdout;
on an error it holds "error" (the exception's type and text) and the exit
status is 1.
"""

import json
import os
import sys

import paramiko

TIMEOUT = 20


def load_key(path):
    key = paramiko.Ed25519Key.from_private_key_file(path)
    key.load_certificate(path + "-cert.pub")
    return key


def connect(host, port, user, key, known, sock=None):
    client = paramiko.SSHClient()
    client.load_host_keys(known)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        host,
        port=port,
        username=user,
        pkey=key,
        sock=sock,
        allow_agent=False,
        look_for_keys=False,
        timeout=TIMEOUT,
        banner_timeout=TIMEOUT,
        auth_timeout=TIMEOUT,
    )
    return client


def run(client, command):
    _, out, err = client.exec_command(command, timeout=TIMEOUT)
    stdout = out.read().decode()
    stderr = err.read().decode()
    return {"stdout": stdout, "stderr": stderr, "code": out.channel.recv_exit_status()}


def session(args):
    host, port, user, key_path, known, login, node, tcp, src, remote_dir = args
    key = load_key(key_path)
    result = {}
    proxy = connect(host, int(port), user, key, known)
    try:
        result["ls"] = run(proxy, "ls")

        transport = proxy.get_transport()
        ch = transport.open_channel("direct-tcpip", (tcp, 7), ("127.0.0.1", 0), timeout=TIMEOUT)
        ch.settimeout(TIMEOUT)
        ch.sendall(b"ping from paramiko\n")
        ch.shutdown_write()
        echoed = b""
        while True:
            data = ch.recv(4096)
            if not data:
                break
            echoed += data
        ch.close()
        result["tcp"] = echoed.decode()

        sock = transport.open_channel("direct-tcpip", (node, 22), ("127.0.0.1", 0), timeout=TIMEOUT)
        inner = connect(node, 22, login, key, known, sock=sock)
        try:
            result["node"] = run(inner, "echo hello from $(uname)")
            sftp = inner.open_sftp()
            sftp.get_channel().settimeout(TIMEOUT)
            remote = remote_dir + "/up.bin"
            sftp.put(src, remote)
            result["sftp_list"] = sorted(sftp.listdir(remote_dir))
            back = src + ".back"
            sftp.get(remote, back)
            result["sftp_back"] = back
            sftp.close()
        finally:
            inner.close()
    finally:
        proxy.close()
    return result


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    try:
        if mode == "session":
            result = session(args)
        elif mode == "connect":
            host, port, user, key_path, known = args
            connect(host, int(port), user, load_key(key_path), known).close()
            result = {"connected": True}
        else:
            raise SystemExit("unknown mode " + mode)
    except Exception as e:  # reported to the test, which judges it
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
        sys.stdout.flush()
        os._exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
