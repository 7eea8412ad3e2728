#!/bin/sh
# The compose file's init step: `warren init` once, then apart from the CA
# keys what the others need: the agents the host CA pin and a join token
# (bootstrap), the OpenSSH servers the user CA's public key (userca), you
# an admin user (users). The directories are the volumes' mount points;
# deploy/check runs this script with others.
set -eu
umask 077
auth=${AUTH:-/warren/auth}
bootstrap=${BOOTSTRAP:-/warren/bootstrap}
userca=${USERCA:-/warren/userca}
users=${USERS:-/warren/users}
if [ ! -e "$auth/user_ca" ]; then
  warren init --data-dir "$auth" > "$bootstrap/init.out"
  sed -n 's/.*ca_pin): *//p' "$bootstrap/init.out" > "$bootstrap/ca_pin"
  grep -v '^#' "$auth/join_tokens" | grep -m1 . > "$bootstrap/join_token"
  # The admin's key and certificate, allowed the login demo on the nodes.
  warren user add admin --logins demo --roles admin --data-dir "$auth" --out "$users" > /dev/null
fi
test -s "$bootstrap/ca_pin" && test -s "$bootstrap/join_token"
cp "$auth/user_ca.pub" "$userca/user_ca.pub"
chmod 0644 "$userca/user_ca.pub" "$bootstrap/ca_pin"
# The image's user (uid 10001) runs the proxies and agents.
if [ "$(id -u)" = 0 ]; then
  chown -R 10001:10001 "$auth" "$bootstrap"
fi
echo "ca_pin: $(cat "$bootstrap/ca_pin")"
