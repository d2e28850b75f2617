#!/bin/sh
# Capture baresip's offer.  usage: baresip.sh OUTDIR NAME "modules..." "account-params" ["extra config lines"]
# e.g. baresip.sh /tmp/out srtp-sdes "stdio ausine aufile g711 srtp" ";mediaenc=srtp-mand"
set -e
here=$(cd "$(dirname "$0")" && pwd)
out=$1; name=$2; mods=$3; params=$4; extra=$5
d=$(mktemp -d); mkdir -p "$out"
port=$(python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
{
echo "poll_method epoll"
echo "sip_listen 127.0.0.1:0"
echo "audio_player aufile,/dev/null"
echo "audio_source ausine,440"
echo "dns_server 127.0.0.1:9"
echo "net_interface 127.0.0.1"
echo "module_path /usr/lib/baresip/modules"
for m in $mods; do echo "module $m.so"; done
echo "module_app menu.so"
echo "module_tmp account.so"
printf "%b\n" "$extra"
} > "$d/config"
echo "<sip:alice@127.0.0.1>;regint=0$params" > "$d/accounts"
: > "$d/contacts"
python3 "$here/listen_invite.py" "$port" "$out/baresip-$name.sdp" 15 &
lp=$!
timeout 20 baresip -f "$d" -e "/dial sip:bob@127.0.0.1:$port" -t 4 > "$d/out.log" 2>&1 || true
wait $lp
rm -rf "$d"
