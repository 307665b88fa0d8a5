// A Benthos binary for the peer benchmark (bench/bench_peers.py): the MIT-licensed core
// (github.com/redpanda-data/benthos/v4) with its pure and io components only (http_server,
// websocket, file, Bloblang); none of Redpanda Connect. Built by bench/peers/build-benthos.sh.
package main

import (
	"context"

	_ "github.com/redpanda-data/benthos/v4/public/components/io"
	_ "github.com/redpanda-data/benthos/v4/public/components/pure"
	"github.com/redpanda-data/benthos/v4/public/service"
)

func main() {
	service.RunCLI(context.Background())
}
