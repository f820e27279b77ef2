// Package client speaks 0-core's protocol to a node agent over RESP with
// go-redis: push a command to core:default, follow stream:<id>, read the
// result with BRPOPLPUSH so other readers still see it.
//
//	c := client.New("127.0.0.1:6379", token)
//	defer c.Close()
//	res, err := c.Run(ctx, agent.Command{Command: "core.ping"}, time.Minute)
//	var v string
//	err = c.JSON(ctx, "core.ping", nil, &v)
package client
