using PeftGen.Cli;

return await CliApp.RunAsync(args);
