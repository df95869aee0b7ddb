// Package deps pins the modules the packages under construction use, so
// that go.sum is complete while they are written in parallel. Removed once
// every dependency is imported by real code.
package deps

import (
	_ "github.com/NVIDIA/go-nvml/pkg/nvml"
	_ "github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	_ "github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxb200"
	_ "github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	_ "github.com/influxdata/influxdb-client-go/v2"
	_ "github.com/influxdata/influxdb-client-go/v2/api/write"
	_ "github.com/influxdata/line-protocol/v2/lineprotocol"
	_ "github.com/klauspost/compress/gzip"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/testutil"
	_ "go.yaml.in/yaml/v3"
	_ "gonum.org/v1/gonum/dsp/fourier"
	_ "google.golang.org/protobuf/encoding/protojson"
	_ "google.golang.org/protobuf/proto"
)
