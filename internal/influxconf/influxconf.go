// Package influxconf writes the minimal influxd 1.8 config that megawatch
// runs a local InfluxDB with: the demo (when influxd is installed) and the
// integration tests.
package influxconf

import (
	"fmt"
	"path/filepath"
)

// Local is an influxd 1.8 config on 127.0.0.1 with all data under dir:
// no usage reporting, the in-memory index, no query or HTTP access logs,
// no self-monitoring store, warnings only.
func Local(dir string, httpPort, rpcPort int) string {
	return fmt.Sprintf(`reporting-disabled = true
bind-address = "127.0.0.1:%d"
[meta]
  dir = %q
[data]
  dir = %q
  wal-dir = %q
  index-version = "inmem"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:%d"
  log-enabled = false
  max-body-size = 0
[logging]
  level = "warn"
[continuous_queries]
  enabled = false
`, rpcPort, filepath.Join(dir, "meta"), filepath.Join(dir, "data"), filepath.Join(dir, "wal"), httpPort)
}
