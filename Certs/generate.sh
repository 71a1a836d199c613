#!/usr/bin/env bash
# DEVELOPMENT ONLY. Makes a throwaway CA, a server certificate for localhost / 127.0.0.1 / ::1 and a
# client certificate for mTLS tests. The private keys are committed on purpose: never trust this CA
# anywhere but a developer's machine or CI.
set -euo pipefail
cd "$(dirname "$0")"
days=3650

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days $days \
  -keyout ca.key -out ca.pem -subj "/CN=Kiln Development CA (do not trust)" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"

openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
  -subj "/CN=localhost"
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days $days -out server.pem \
  -extfile <(printf "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE")

openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout client.key -out client.csr \
  -subj "/CN=kiln-dev-client"
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days $days -out client.pem \
  -extfile <(printf "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE")

rm -f server.csr client.csr ca.srl
echo "development certificates written to $(pwd)"
