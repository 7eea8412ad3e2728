#!/bin/sh
# The compose file's init step: `warren init` once, then apart from the CA
# keys what the others need: the agents the host CA pin and a join token,
# the OpenSSH server the user CA's public key, you an admin user.
set -eu
umask 077
if [ ! -e /warren/auth/user_ca ]; then
  warren init --data-dir /warren/auth > /warren/bootstrap/init.out
  sed -n 's/.*ca_pin): *//p' /warren/bootstrap/init.out > /warren/bootstrap/ca_pin
  grep -v '^#' /warren/auth/join_tokens | grep -m1 . > /warren/bootstrap/join_token
  # The admin's key and certificate, allowed the login demo on sshd-eu.
  warren user add admin --logins demo --roles admin --data-dir /warren/auth --out /warren/users
fi
test -s /warren/bootstrap/ca_pin && test -s /warren/bootstrap/join_token
cp /warren/auth/user_ca.pub /warren/userca/user_ca.pub
chmod 0644 /warren/userca/user_ca.pub /warren/bootstrap/ca_pin
chown -R 10001:10001 /warren/auth /warren/bootstrap
echo "ca_pin: $(cat /warren/bootstrap/ca_pin)"
